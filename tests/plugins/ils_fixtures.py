"""Koha and Evergreen databases shaped like the real ones, for the read-only SQL connectors.

Koha: the relevant part of `installer/data/mysql/kohastructure.sql`: the column definitions,
keys and table options of the columns the bridge reads, as Koha's own DDL states them (Koha's
main line as mirrored at openfifth/koha, commit 0184212ae992ab44a04cf92c57e5306b7cd2308c, Koha's
dump of MariaDB 10.11; the index's copy of Koha-Community/Koha held only the 3.0-era file).
The table's collation (utf8mb4_unicode_ci) is Koha's, which is why card numbers match whatever
their case. PINs hashed the way `Koha::AuthUtils::hash_password` does (bcrypt, `$2a$08$`), one
legacy unsalted `md5_base64` row, one long passphrase hashed by Perl's Crypt::Eksblowfish (Koha's
own hashing code), and the dates old upgraded databases hold: `0000-00-00`, written under an
empty session sql_mode as the servers of the time allowed.

Evergreen: the relevant part of `005.schema.actors.sql` and friends; the main password written
exactly as Evergreen writes it, by pgcrypto inside PostgreSQL:
`salt = gen_salt('bf', 10)`, `passwd = crypt(md5(salt || md5(pin)), salt)`; one user never
migrated (only `actor.usr.passwd`, the MD5 hex Evergreen's actor.usr insert trigger stored
before 2.10, like Evergreen's own seed admin); an org tree of two systems with branches and
the org-unit functions penalty scoping uses (`actor.org_unit_ancestors`, `_descendants`,
`_full_path`: written here with recursive queries that give the same sets as Evergreen's in
020.schema.functions.sql).

Each builder also creates a least-privilege account (SELECT only) that the plugin connects as.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import bcrypt

from tests.pins import DEMO_PIN
from tests.plugins import servers
from tests.plugins.seed import FUTURE, TODAY, SeedPatron

# ---------------------------------------------------------------------------------------------
# Koha (MariaDB)
# ---------------------------------------------------------------------------------------------

KOHA_SCHEMA = [
    """CREATE TABLE `branches` (
  `branchcode` varchar(10) NOT NULL DEFAULT '',
  `branchname` longtext NOT NULL,
  PRIMARY KEY (`branchcode`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE `categories` (
  `categorycode` varchar(10) NOT NULL DEFAULT '',
  `description` longtext DEFAULT NULL,
  `category_type` varchar(1) NOT NULL DEFAULT 'A',
  PRIMARY KEY (`categorycode`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE `borrowers` (
  `borrowernumber` int(11) NOT NULL AUTO_INCREMENT,
  `cardnumber` varchar(32) DEFAULT NULL,
  `surname` longtext DEFAULT NULL,
  `firstname` mediumtext DEFAULT NULL,
  `email` longtext DEFAULT NULL,
  `emailpro` mediumtext DEFAULT NULL,
  `B_email` mediumtext DEFAULT NULL,
  `branchcode` varchar(10) NOT NULL DEFAULT '',
  `categorycode` varchar(10) NOT NULL DEFAULT '',
  `dateenrolled` date DEFAULT NULL,
  `dateexpiry` date DEFAULT NULL,
  `password_expiration_date` date DEFAULT NULL,
  `gonenoaddress` tinyint(1) DEFAULT NULL,
  `lost` tinyint(1) DEFAULT NULL,
  `debarred` date DEFAULT NULL,
  `debarredcomment` varchar(255) DEFAULT NULL,
  `password` varchar(60) DEFAULT NULL,
  `secret` mediumtext DEFAULT NULL,
  `auth_method` enum('password','two-factor') NOT NULL DEFAULT 'password',
  `userid` varchar(75) DEFAULT NULL,
  `updated_on` timestamp NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  `lastseen` datetime DEFAULT NULL,
  `login_attempts` int(4) NOT NULL DEFAULT 0,
  `anonymized` tinyint(1) NOT NULL DEFAULT 0,
  PRIMARY KEY (`borrowernumber`),
  UNIQUE KEY `cardnumber` (`cardnumber`),
  UNIQUE KEY `userid` (`userid`),
  KEY `categorycode` (`categorycode`),
  KEY `branchcode` (`branchcode`),
  KEY `cardnumber_idx` (`cardnumber`),
  KEY `userid_idx` (`userid`),
  CONSTRAINT `borrowers_ibfk_1` FOREIGN KEY (`categorycode`)
    REFERENCES `categories` (`categorycode`),
  CONSTRAINT `borrowers_ibfk_2` FOREIGN KEY (`branchcode`) REFERENCES `branches` (`branchcode`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE `borrower_debarments` (
  `borrower_debarment_id` int(11) NOT NULL AUTO_INCREMENT,
  `borrowernumber` int(11) NOT NULL,
  `expiration` date DEFAULT NULL,
  `type` varchar(50) NOT NULL,
  `comment` mediumtext DEFAULT NULL,
  `manager_id` int(11) DEFAULT NULL,
  `created` timestamp NOT NULL DEFAULT current_timestamp(),
  `updated` timestamp NULL DEFAULT NULL ON UPDATE current_timestamp(),
  PRIMARY KEY (`borrower_debarment_id`),
  KEY `borrowernumber` (`borrowernumber`),
  CONSTRAINT `borrower_debarments_ibfk_1` FOREIGN KEY (`borrowernumber`)
    REFERENCES `borrowers` (`borrowernumber`) ON DELETE CASCADE ON UPDATE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE `accountlines` (
  `accountlines_id` int(11) NOT NULL AUTO_INCREMENT,
  `issue_id` int(11) DEFAULT NULL,
  `borrowernumber` int(11) DEFAULT NULL,
  `itemnumber` int(11) DEFAULT NULL,
  `date` timestamp NULL DEFAULT NULL,
  `amount` decimal(28,6) DEFAULT NULL,
  `description` longtext DEFAULT NULL,
  `credit_type_code` varchar(80) DEFAULT NULL,
  `debit_type_code` varchar(80) DEFAULT NULL,
  `status` varchar(16) DEFAULT NULL,
  `amountoutstanding` decimal(28,6) DEFAULT NULL,
  `timestamp` timestamp NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  `interface` varchar(16) NOT NULL,
  `branchcode` varchar(10) DEFAULT NULL,
  PRIMARY KEY (`accountlines_id`),
  KEY `acctsborridx` (`borrowernumber`),
  CONSTRAINT `accountlines_ibfk_borrowers` FOREIGN KEY (`borrowernumber`)
    REFERENCES `borrowers` (`borrowernumber`) ON DELETE SET NULL ON UPDATE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE `systempreferences` (
  `variable` varchar(50) NOT NULL DEFAULT '',
  `value` mediumtext DEFAULT NULL,
  `options` longtext DEFAULT NULL,
  `explanation` mediumtext DEFAULT NULL,
  `type` varchar(20) DEFAULT NULL,
  PRIMARY KEY (`variable`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
]

# Koha-only patrons the Koha tests look at (beyond the shared seed).
KOHA_MD5 = SeedPatron("29000000000021", "Legacy", "Lou", category="ADULT")
KOHA_LOCKED = SeedPatron("29000000000022", "Locked", "Lia")  # login_attempts >= FailedLoginAttempts
KOHA_ADMIN_LOCK = SeedPatron("29000000000023", "Adminlock", "Al")  # login_attempts < 0
KOHA_RESTRICTED = SeedPatron("29000000000024", "Restricted", "Rae")  # borrower_debarments row
KOHA_PW_EXPIRED = SeedPatron("29000000000025", "Pwexpired", "Pam")
# 0000-00-00 in dateexpiry, debarred and password_expiration_date: no dates, as Koha reads them.
KOHA_ZERO_DATES = SeedPatron("29000000000026", "Zerodate", "Zoe")
KOHA_LIFTED_TODAY = SeedPatron("29000000000027", "Lifted", "Lin")  # restricted until today
KOHA_RESTRICTED_TOMORROW = SeedPatron("29000000000028", "Stillrestricted", "Sid")
KOHA_LOWERCASE = SeedPatron("k19abc", "Casey", "Cam")  # found as K19ABC too (the collation)
KOHA_PASSPHRASE = SeedPatron("29000000000029", "Passphrase", "Pip", pin=None)  # 87 bytes
# Its userid is another patron's card number: `identifier = "either"` takes the card first.
KOHA_USERID_CLASH = SeedPatron("29000000000030", "Clash", "Cleo")
KOHA_EXTRA = (
    KOHA_MD5,
    KOHA_LOCKED,
    KOHA_ADMIN_LOCK,
    KOHA_RESTRICTED,
    KOHA_PW_EXPIRED,
    KOHA_ZERO_DATES,
    KOHA_LIFTED_TODAY,
    KOHA_RESTRICTED_TOMORROW,
    KOHA_LOWERCASE,
    KOHA_PASSPHRASE,
    KOHA_USERID_CLASH,
)
# 87 bytes in UTF-8 (one two-byte character); Koha hashes its first 72.
KOHA_LONG_PASSPHRASE = (
    "Bücherei-Passphrase: the seventh shelf from the left holds the annual reports, 1987-99"
)
FAILED_LOGIN_ATTEMPTS = 5


def koha_bcrypt(pin: str) -> str:
    """As `Koha::AuthUtils::hash_password`: bcrypt, cost 8, `$2a$` prefix."""
    return bcrypt.hashpw(pin.encode(), bcrypt.gensalt(8, prefix=b"2a")).decode()


def koha_md5(pin: str) -> str:
    """Koha's legacy `md5_base64(password)`: unsalted, 22 characters, no padding."""
    return base64.b64encode(hashlib.md5(pin.encode()).digest()).decode().rstrip("=")


def koha_userid(s: SeedPatron) -> str:
    """The Koha userid the fixture gives a patron."""
    return f"user{s.barcode}"


def build_koha(
    dbname: str, seed: Iterable[SeedPatron], *, passphrase_hash: str | None = None
) -> dict[str, Any]:
    """Create the Koha tables, fill them, and a SELECT-only account; return its credentials."""
    user, password = servers.unique("koha_ro"), secrets.token_hex(12)
    admin = servers.mariadb_admin(dbname)
    try:
        with admin.cursor() as cur:
            for statement in KOHA_SCHEMA:
                cur.execute(statement)
            cur.execute("INSERT INTO branches VALUES ('MAIN', 'Main Library')")
            cur.executemany(
                "INSERT INTO categories (categorycode, description, category_type) "
                "VALUES (%s, %s, %s)",
                [("ADULT", "Adult", "A"), ("CHILD", "Child", "C")],
            )
            cur.execute(
                "INSERT INTO systempreferences (variable, value, type) "
                "VALUES ('FailedLoginAttempts', %s, 'Integer')",
                (str(FAILED_LOGIN_ATTEMPTS),),
            )
            for s in seed:
                insert_koha_patron(cur, s)
            if seed:
                insert_koha_patron(cur, KOHA_MD5, password=koha_md5(DEMO_PIN))
                insert_koha_patron(cur, KOHA_LOCKED, login_attempts=FAILED_LOGIN_ATTEMPTS)
                insert_koha_patron(cur, KOHA_ADMIN_LOCK, login_attempts=-1)
                number = insert_koha_patron(cur, KOHA_RESTRICTED)
                cur.execute(
                    "INSERT INTO borrower_debarments (borrowernumber, expiration, type, comment) "
                    "VALUES (%s, NULL, 'MANUAL', 'see the desk')",
                    (number,),
                )
                insert_koha_patron(
                    cur, KOHA_PW_EXPIRED, password_expiration=TODAY - dt.timedelta(days=1)
                )
                insert_koha_zero_dates(cur, KOHA_ZERO_DATES)
                number = insert_koha_patron(cur, KOHA_LIFTED_TODAY, debarred=TODAY)
                cur.execute(  # Koha deletes nothing when a restriction ends: it just lapses
                    "INSERT INTO borrower_debarments (borrowernumber, expiration, type, comment) "
                    "VALUES (%s, %s, 'MANUAL', 'ends today')",
                    (number, TODAY),
                )
                tomorrow = TODAY + dt.timedelta(days=1)
                insert_koha_patron(cur, KOHA_RESTRICTED_TOMORROW, debarred=tomorrow)
                insert_koha_patron(cur, KOHA_LOWERCASE)
                insert_koha_patron(cur, KOHA_PASSPHRASE, password=passphrase_hash)
                seeded = tuple(seed)
                clash_with = seeded[0].barcode if seeded else "none"
                insert_koha_patron(cur, KOHA_USERID_CLASH, userid=clash_with)
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
            cur.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'")
            for host in ("%", "localhost"):
                cur.execute(f"GRANT SELECT ON `{dbname}`.* TO '{user}'@'{host}'")
    finally:
        admin.close()
    return {"user": user, "password": password}


def insert_koha_patron(
    cur: Any,
    s: SeedPatron,
    *,
    password: str | None = None,
    login_attempts: int = 0,
    password_expiration: dt.date | None = None,
    debarred: dt.date | str | None = None,
    userid: str | None = None,
) -> int:
    if password is None and s.pin is not None:
        password = koha_bcrypt(s.pin)
    lost = None
    comment = "restricted" if debarred else None
    if s.blocked == "card reported lost":
        lost = 1
    elif s.blocked:
        debarred, comment = dt.date(9999, 12, 31), s.blocked
    cur.execute(
        "INSERT INTO borrowers (cardnumber, surname, firstname, email, branchcode, categorycode, "
        "dateenrolled, dateexpiry, password_expiration_date, lost, debarred, debarredcomment, "
        "password, userid, login_attempts) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            s.barcode,
            s.surname,
            s.given,
            s.email,
            s.home_library,
            s.category,
            TODAY,
            s.expires,
            password_expiration,
            lost,
            debarred,
            comment,
            password or "!",
            userid or koha_userid(s),
            login_attempts,
        ),
    )
    number = int(cur.lastrowid)
    if s.fines:
        # A debit and a partial payment: the balance is the sum of what is outstanding.
        cur.executemany(
            "INSERT INTO accountlines (borrowernumber, amount, amountoutstanding, "
            "debit_type_code, credit_type_code, interface) VALUES (%s, %s, %s, %s, %s, 'test')",
            [
                (number, s.fines + 5, s.fines + 5, "OVERDUE", None),
                (number, Decimal(-5), Decimal(-5), None, "PAYMENT"),
            ],
        )
    return number


def insert_koha_zero_dates(cur: Any, s: SeedPatron) -> None:
    """A patron row from an old upgraded Koha: `0000-00-00` where a date is missing. Written
    under an empty sql_mode (no NO_ZERO_DATE, no strict mode), as MariaDB servers of that era
    ran; the session's mode is restored afterwards."""
    number = insert_koha_patron(cur, s)
    cur.execute("SET @saved_sql_mode = @@SESSION.sql_mode")
    cur.execute("SET SESSION sql_mode = ''")
    try:
        cur.execute(
            "UPDATE borrowers SET dateexpiry = '0000-00-00', debarred = '0000-00-00', "
            "password_expiration_date = '0000-00-00' WHERE borrowernumber = %s",
            (number,),
        )
        cur.execute(
            "SELECT dateexpiry, debarred FROM borrowers WHERE borrowernumber = %s", (number,)
        )
        assert cur.fetchone() == ("0000-00-00", "0000-00-00"), "zero dates not stored"
    finally:
        cur.execute("SET SESSION sql_mode = @saved_sql_mode")


def drop_koha_user(user: str) -> None:
    admin = servers.mariadb_admin()
    try:
        with admin.cursor() as cur:
            for host in ("%", "localhost"):
                cur.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
    finally:
        admin.close()


# ---------------------------------------------------------------------------------------------
# Evergreen (PostgreSQL)
# ---------------------------------------------------------------------------------------------

EVERGREEN_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE SCHEMA actor;
CREATE SCHEMA config;
CREATE SCHEMA permission;
CREATE SCHEMA money;
CREATE SCHEMA evergreen;
-- Evergreen's own is plperlu `lc(shift)`; the same answers for this test data.
CREATE FUNCTION evergreen.lowercase(TEXT) RETURNS TEXT AS $$ SELECT lower($1) $$
    LANGUAGE SQL IMMUTABLE STRICT;
CREATE TABLE permission.grp_tree (
    id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, parent INT,
    usergroup BOOL NOT NULL DEFAULT TRUE
);
CREATE TABLE actor.org_unit_type (
    id SERIAL PRIMARY KEY, name TEXT NOT NULL, opac_label TEXT NOT NULL, depth INT NOT NULL,
    parent INT, can_have_vols BOOL NOT NULL DEFAULT TRUE, can_have_users BOOL NOT NULL DEFAULT TRUE
);
CREATE TABLE actor.org_unit (
    id SERIAL PRIMARY KEY, parent_ou INT, ou_type INT NOT NULL DEFAULT 1,
    shortname TEXT NOT NULL UNIQUE, name TEXT NOT NULL UNIQUE
);
-- An org unit and everything above it / below it; the full path is both.
CREATE FUNCTION actor.org_unit_ancestors(INT) RETURNS SETOF actor.org_unit AS $$
    WITH RECURSIVE up(id, hops) AS (
        SELECT $1, 0
        UNION
        SELECT o.parent_ou, up.hops + 1 FROM actor.org_unit o JOIN up ON o.id = up.id
         WHERE o.parent_ou IS NOT NULL
    )
    SELECT o.* FROM actor.org_unit o JOIN up USING (id) ORDER BY up.hops DESC
$$ LANGUAGE SQL STABLE ROWS 1;
CREATE FUNCTION actor.org_unit_descendants(INT) RETURNS SETOF actor.org_unit AS $$
    WITH RECURSIVE down(id) AS (
        SELECT id FROM actor.org_unit WHERE id = $1
        UNION ALL
        SELECT o.id FROM actor.org_unit o JOIN down ON o.parent_ou = down.id
    )
    SELECT o.* FROM actor.org_unit o JOIN down USING (id)
$$ LANGUAGE SQL STABLE ROWS 1;
CREATE FUNCTION actor.org_unit_full_path(INT) RETURNS SETOF actor.org_unit AS $$
    SELECT o.* FROM actor.org_unit o
      JOIN (SELECT id FROM actor.org_unit_ancestors($1)
            UNION SELECT id FROM actor.org_unit_descendants($1)) p USING (id)
      JOIN actor.org_unit_type t ON t.id = o.ou_type
     ORDER BY t.depth
$$ LANGUAGE SQL STABLE;
CREATE TABLE actor.usr (
    id SERIAL PRIMARY KEY,
    card INT UNIQUE,
    profile INT NOT NULL,
    usrname TEXT NOT NULL UNIQUE,
    email TEXT,
    passwd TEXT NOT NULL,
    standing INT NOT NULL DEFAULT 1,
    ident_type INT NOT NULL DEFAULT 1,
    first_given_name TEXT NOT NULL,
    second_given_name TEXT,
    family_name TEXT NOT NULL,
    pref_first_given_name TEXT,
    pref_family_name TEXT,
    home_ou INT NOT NULL,
    dob DATE,
    active BOOL NOT NULL DEFAULT TRUE,
    master_account BOOL NOT NULL DEFAULT FALSE,
    super_user BOOL NOT NULL DEFAULT FALSE,
    barred BOOL NOT NULL DEFAULT FALSE,
    deleted BOOL NOT NULL DEFAULT FALSE,
    juvenile BOOL NOT NULL DEFAULT FALSE,
    create_date TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    expire_date TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT (now() + '3 years'::INTERVAL)
);
CREATE TABLE actor.card (
    id SERIAL PRIMARY KEY,
    usr INT NOT NULL REFERENCES actor.usr (id) DEFERRABLE INITIALLY DEFERRED,
    barcode TEXT NOT NULL UNIQUE,
    active BOOL NOT NULL DEFAULT TRUE
);
CREATE INDEX actor_card_usr_idx ON actor.card (usr);
CREATE INDEX actor_usr_email_idx ON actor.usr (evergreen.lowercase(email));
CREATE TABLE actor.passwd_type (
    code TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, login BOOLEAN NOT NULL DEFAULT FALSE,
    regex TEXT, crypt_algo TEXT, iter_count INTEGER CHECK (iter_count IS NULL OR iter_count > 0)
);
CREATE TABLE actor.passwd (
    id SERIAL PRIMARY KEY,
    usr INTEGER NOT NULL REFERENCES actor.usr(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    salt TEXT,
    passwd TEXT NOT NULL,
    passwd_type TEXT NOT NULL REFERENCES actor.passwd_type(code) DEFERRABLE INITIALLY DEFERRED,
    create_date TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    edit_date TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT passwd_type_once_per_user UNIQUE (usr, passwd_type)
);
CREATE TABLE config.standing_penalty (
    id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, label TEXT NOT NULL,
    block_list TEXT, staff_alert BOOL NOT NULL DEFAULT FALSE, org_depth INTEGER
);
CREATE TABLE actor.usr_standing_penalty (
    id SERIAL PRIMARY KEY, org_unit INT NOT NULL, usr INT NOT NULL,
    standing_penalty INT NOT NULL REFERENCES config.standing_penalty (id),
    staff INT, set_date TIMESTAMP WITH TIME ZONE DEFAULT NOW(), stop_date TIMESTAMP WITH TIME ZONE
);
CREATE INDEX actor_usr_standing_penalty_usr_idx ON actor.usr_standing_penalty (usr);
CREATE TABLE money.materialized_billable_xact_summary (
    id BIGINT PRIMARY KEY, usr INT, xact_start TIMESTAMPTZ DEFAULT now(), xact_finish TIMESTAMPTZ,
    total_paid NUMERIC(8,2) NOT NULL DEFAULT 0, total_owed NUMERIC(8,2) NOT NULL DEFAULT 0,
    balance_owed NUMERIC(8,2) NOT NULL DEFAULT 0, xact_type TEXT
);
CREATE INDEX money_mat_summary_usr_idx ON money.materialized_billable_xact_summary (usr);
CREATE VIEW money.open_usr_summary AS
    SELECT usr, sum(total_paid) AS total_paid, sum(total_owed) AS total_owed,
           sum(balance_owed) AS balance_owed
      FROM money.materialized_billable_xact_summary
     WHERE xact_finish IS NULL
     GROUP BY usr;
INSERT INTO permission.grp_tree (id, name) VALUES (1, 'Users'), (2, 'ADULT');
INSERT INTO actor.org_unit_type (id, name, opac_label, depth, parent) VALUES
    (1, 'Consortium', 'Everywhere', 0, NULL), (2, 'System', 'Local System', 1, 1),
    (3, 'Branch', 'This Branch', 2, 2);
-- CONS > SYS1 > {MAIN, BR2};  CONS > SYS2 > BR3
INSERT INTO actor.org_unit (id, parent_ou, ou_type, shortname, name) VALUES
    (1, NULL, 1, 'CONS', 'Consortium'), (3, 1, 2, 'SYS1', 'System One'),
    (2, 3, 3, 'MAIN', 'Main Library'), (4, 3, 3, 'BR2', 'Branch Two'),
    (5, 1, 2, 'SYS2', 'System Two'), (6, 5, 3, 'BR3', 'Branch Three');
INSERT INTO actor.passwd_type (code, name, login, crypt_algo, iter_count)
    VALUES ('main', 'Main Login Password', TRUE, 'bf', 10);
INSERT INTO config.standing_penalty (id, name, label, block_list) VALUES
    (1, 'PATRON_EXCEEDS_FINES', 'Patron exceeds fine threshold', 'CIRC|HOLD|RENEW'),
    (20, 'ALERT_NOTE', 'Alerting note', NULL),
    (30, 'PATRON_IN_COLLECTIONS', 'Patron has been referred to a collections agency', NULL);
"""

EG_INACTIVE = SeedPatron("29000000000031", "Inactive", "Ivy")  # actor.usr.active = false
EG_CARD_INACTIVE = SeedPatron("29000000000032", "Oldcard", "Otto")  # actor.card.active = false
EG_PENALTY = SeedPatron("29000000000033", "Penalty", "Pat")  # PATRON_EXCEEDS_FINES (CIRC)
EG_ALERT = SeedPatron("29000000000034", "Alert", "Abe")  # a penalty that blocks nothing
EG_DELETED = SeedPatron("29000000000035", "Deleted", "Dee")  # actor.usr.deleted = true
# Never migrated: only actor.usr.passwd (MD5 hex), no actor.passwd row.
EG_UNMIGRATED = SeedPatron("29000000000036", "Unmigrated", "Uma")
# Never migrated, and actor.usr.passwd is the MD5 of the empty string: no password.
EG_EMPTY_LEGACY = SeedPatron("29000000000037", "Emptylegacy", "Eli")
# PATRON_EXCEEDS_FINES set at BR3 (the other system): not in MAIN's full path.
EG_PENALTY_ELSEWHERE = SeedPatron("29000000000038", "Elsewhere", "Eld")
# PATRON_EXCEEDS_FINES set at BR2: a sibling of MAIN, in SYS1's full path but not MAIN's.
EG_PENALTY_SIBLING = SeedPatron("29000000000039", "Sibling", "Sib")
EG_EXTRA = (
    EG_INACTIVE,
    EG_CARD_INACTIVE,
    EG_PENALTY,
    EG_ALERT,
    EG_DELETED,
    EG_UNMIGRATED,
    EG_EMPTY_LEGACY,
    EG_PENALTY_ELSEWHERE,
    EG_PENALTY_SIBLING,
)


def build_evergreen(dbname: str, seed: Iterable[SeedPatron], **_: Any) -> dict[str, Any]:
    """Create the Evergreen tables, fill them the Evergreen way, and a SELECT-only role."""
    user, password = servers.unique("eg_ro"), secrets.token_hex(12)
    seed = tuple(seed)
    with servers.pg_admin(dbname) as admin:
        admin.execute(EVERGREEN_SCHEMA)
        for s in seed:
            insert_evergreen_patron(admin, s)
        if seed:
            insert_evergreen_patron(admin, EG_INACTIVE, active=False)
            insert_evergreen_patron(admin, EG_CARD_INACTIVE, card_active=False)
            usr = insert_evergreen_patron(admin, EG_PENALTY)
            admin.execute(
                "INSERT INTO actor.usr_standing_penalty (org_unit, usr, standing_penalty) "
                "VALUES (1, %s, 1)",
                (usr,),
            )
            usr = insert_evergreen_patron(admin, EG_ALERT)
            admin.execute(
                "INSERT INTO actor.usr_standing_penalty (org_unit, usr, standing_penalty) "
                "VALUES (1, %s, 20)",
                (usr,),
            )
            # An ended penalty blocks nothing either.
            admin.execute(
                "INSERT INTO actor.usr_standing_penalty (org_unit, usr, standing_penalty, "
                "stop_date) VALUES (1, %s, 1, now() - interval '1 day')",
                (usr,),
            )
            insert_evergreen_patron(admin, EG_DELETED, deleted=True)
            insert_evergreen_patron(admin, EG_UNMIGRATED, legacy=EG_UNMIGRATED.pin)
            insert_evergreen_patron(admin, EG_EMPTY_LEGACY, legacy="")
            for patron, org in ((EG_PENALTY_ELSEWHERE, 6), (EG_PENALTY_SIBLING, 4)):
                usr = insert_evergreen_patron(admin, patron)
                admin.execute(
                    "INSERT INTO actor.usr_standing_penalty (org_unit, usr, standing_penalty) "
                    "VALUES (%s, %s, 1)",
                    (org, usr),
                )
        admin.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        admin.execute(
            f"GRANT USAGE ON SCHEMA actor, config, permission, money, evergreen TO {user}"
        )
        admin.execute(
            f"GRANT SELECT ON ALL TABLES IN SCHEMA actor, config, permission, money TO {user}"
        )
    return {"user": user, "password": password}


def insert_evergreen_patron(
    admin: Any,
    s: SeedPatron,
    *,
    active: bool = True,
    card_active: bool = True,
    deleted: bool = False,
    legacy: str | None = None,
) -> int:
    """One user with one card. `legacy`: a password never migrated into actor.passwd, stored
    in actor.usr.passwd as Evergreen's insert trigger did (`NEW.passwd = MD5(NEW.passwd)`)."""
    expires = dt.datetime.combine(s.expires or FUTURE, dt.time(23, 59), dt.UTC)
    row = admin.execute(
        "INSERT INTO actor.usr (profile, usrname, email, passwd, first_given_name, family_name, "
        "home_ou, active, barred, deleted, expire_date) "
        "VALUES (2, %s, %s, CASE WHEN %s::text IS NULL THEN '' ELSE md5(%s::text) END, "
        "%s, %s, 2, %s, %s, %s, %s) RETURNING id",
        (
            f"user{s.barcode}",
            s.email,
            legacy,
            legacy,
            s.given,
            s.surname,
            active,
            s.blocked is not None,
            deleted,
            expires,
        ),
    ).fetchone()
    usr = int(row[0])
    card = admin.execute(
        "INSERT INTO actor.card (usr, barcode, active) VALUES (%s, %s, %s) RETURNING id",
        (usr, s.barcode, card_active),
    ).fetchone()
    admin.execute("UPDATE actor.usr SET card = %s WHERE id = %s", (card[0], usr))
    if s.pin is not None and legacy is None:
        # Exactly Evergreen's actor.change_password(): the PIN is md5'd, salted and crypt()ed
        # inside the database.
        admin.execute(
            "WITH s AS (SELECT gen_salt('bf', 10) AS salt) "
            "INSERT INTO actor.passwd (usr, salt, passwd, passwd_type) "
            "SELECT %s, s.salt, crypt(md5(s.salt || md5(%s)), s.salt), 'main' FROM s",
            (usr, s.pin),
        )
    if s.fines:
        admin.execute(
            "INSERT INTO money.materialized_billable_xact_summary "
            "(id, usr, total_owed, total_paid, balance_owed, xact_type) VALUES "
            "(%s, %s, %s, 5, %s, 'grocery'), (%s, %s, 3, 0, 3, 'circulation')",
            (usr * 10, usr, s.fines + 5, s.fines, usr * 10 + 1, usr),
        )
        # The second transaction is closed: it does not count.
        admin.execute(
            "UPDATE money.materialized_billable_xact_summary SET xact_finish = now() WHERE id = %s",
            (usr * 10 + 1,),
        )
    return usr


def drop_pg_role(user: str) -> None:
    with servers.pg_admin("postgres") as admin:
        admin.execute(f"DROP ROLE IF EXISTS {user}")
