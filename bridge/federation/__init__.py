"""Federation front ends: the bridge as an OpenID Connect provider ("sign in with your library
card"), sharing the PIN pages' look, languages and sign-in form (bridge.portal)."""
