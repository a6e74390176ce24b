"""bcrypt hashes made by the code Koha itself hashes with: Perl's Crypt::Eksblowfish::Bcrypt
(Debian package libcrypt-eksblowfish-perl), called the way `Koha::AuthUtils::hash_password`
calls it: `bcrypt($password, '$2a$08$' . en_base64(<16 random bytes>))`.

The passphrase goes to Perl on stdin as UTF-8 bytes (Koha encodes before hashing), never on the
command line. Eksblowfish reads only the first 72 bytes of the key, which is what the bridge
must reproduce for longer passphrases.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import in_ci, require_tool

# Koha::AuthUtils::hash_password's settings, with a salt of 16 bytes from /dev/urandom.
_SCRIPT = r"""
use strict;
use Crypt::Eksblowfish::Bcrypt qw(bcrypt en_base64);
binmode STDIN;
local $/;
my $password = <STDIN>;
open my $random, '<:raw', '/dev/urandom' or die "urandom: $!";
read($random, my $salt, 16) == 16 or die "short read";
print bcrypt($password, '$2a$08$' . en_base64($salt));
"""


def require_eksblowfish() -> str:
    """Perl with Crypt::Eksblowfish::Bcrypt, or skip (fail in CI: .ci/run installs it)."""
    perl = require_tool("perl")
    probe = subprocess.run(
        [perl, "-MCrypt::Eksblowfish::Bcrypt", "-e", "1"], capture_output=True, timeout=60
    )
    if probe.returncode != 0:
        message = "Perl's Crypt::Eksblowfish::Bcrypt is missing (libcrypt-eksblowfish-perl)"
        if in_ci():
            pytest.fail(f"{message}; .ci/run must install it")
        pytest.skip(message)
    return perl


def koha_perl_bcrypt(passphrase: bytes) -> str:
    """`$2a$08$...` exactly as Koha's hash_password makes it."""
    perl = require_eksblowfish()
    done = subprocess.run(
        [perl, "-e", _SCRIPT], input=passphrase, capture_output=True, timeout=60, check=True
    )
    stored = done.stdout.decode("ascii")
    assert stored.startswith("$2a$08$") and len(stored) == 60, "unexpected Eksblowfish output"
    return stored
