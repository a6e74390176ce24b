"""802.1X: EAP-TTLS with inner PAP, terminated in the RADIUS front end.

Pure pieces (the EAP codec, the TLS-method fragmenter, the TTLS AVP codec, MPPE key encryption,
the per-conversation state machine with `now` passed in, the conversation table) and one thin
adapter (`frontend`) that the UDP server calls for Access-Requests carrying EAP-Message.
"""
