"""The cookie backend: conformance, Session compatibility proven with the openssl CLI, and errors."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kvctl_plugins.cookie import CookieStore

from kvctl.errors import AuthError, BadURLError, CorruptError, LimitError, UnsupportedError, UsageError
from kvctl.store import Record
from kvctl.testing import StoreConformance
from kvctl.testing import open_sync as _open_sync

SECRET = "correct horse battery staple, 40 bytes!!"  # >= 32 bytes: AES key is its first 32
assert len(SECRET) >= 32


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVCTL_COOKIE_SECRET", SECRET)


# 500 batch records compress to 3.9-4.0 KiB of cookie (an AES block more or less, with the
# session's timestamps): at the 4 KiB limit by a few bytes either way, so the batch tests use 300.
COOKIE_BATCH = 300


class TestCookieConformance(StoreConformance):
    batch_records = COOKIE_BATCH

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"cookie://{tmp_path / 'token.txt'}"


class TestCookieGzipKdfConformance(StoreConformance):
    batch_records = COOKIE_BATCH

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"cookie://{tmp_path / 'token.txt'}?gzip=always&kdf=pbkdf2&kdf_iterations=1000"


def open_sync(url: str) -> CookieStore:
    store = _open_sync(url)
    assert isinstance(store, CookieStore)
    return store


# -- independent test vectors: the openssl command line ------------------------------------------
def _sh(script: str, **env: str) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                          env=os.environ | env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# Builds a Session cookie from $PLAIN (a file) with openssl alone: AES-256-CBC with the IV appended,
# URL-safe base64, HMAC-SHA256 of the data text, then base64 of ["data","digest"].
BUILD_WITH_OPENSSL = r"""
cd "$WORK"
openssl enc -aes-256-cbc -K "$KEYHEX" -iv "$IVHEX" -in "$PLAIN" -out ct.bin
printf '%s' "$IVHEX" | xxd -r -p > iv.bin
cat ct.bin iv.bin > blob.bin
data=$(openssl base64 -A -in blob.bin | tr '+/' '-_')
digest=$(printf '%s' "$data" | openssl dgst -sha256 -hmac "$SECRET" -binary | openssl base64 -A | tr '+/' '-_')
printf '["%s","%s"]' "$data" "$digest" | openssl base64 -A | tr '+/' '-_'
"""

# Verifies and decrypts a kvctl cookie ($TOKEN) with openssl alone; prints the plaintext.
OPEN_WITH_OPENSSL = r"""
cd "$WORK"
pair=$(printf '%s' "$TOKEN" | tr -- '-_' '+/' | openssl base64 -d -A)
data=$(printf '%s' "$pair" | sed -E 's/^\["([^"]*)","([^"]*)"\]$/\1/')
digest=$(printf '%s' "$pair" | sed -E 's/^\["([^"]*)","([^"]*)"\]$/\2/')
want=$(printf '%s' "$data" | openssl dgst -sha256 -hmac "$SECRET" -binary | openssl base64 -A | tr '+/' '-_')
[ "$want" = "$digest" ] || { echo "HMAC mismatch" >&2; exit 1; }
printf '%s' "$data" | tr -- '-_' '+/' | openssl base64 -d -A > blob.bin
size=$(stat -c %s blob.bin)
head -c $((size - 16)) blob.bin > ct.bin
ivhex=$(tail -c 16 blob.bin | xxd -p | tr -d '\n')
openssl enc -d -aes-256-cbc -K "$KEYHEX" -iv "$ivhex" -in ct.bin
"""

PBKDF2_WITH_OPENSSL = r"""
openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt "pass:$SECRET" -kdfopt salt:session_kdf_salt \
    -kdfopt iter:100000 PBKDF2 | tr -d ':\n' | tr 'A-F' 'a-f'
"""

SESSION_JSON: dict[str, Any] = {
    "session_id": "5f0c3f9e-3c41-4bd9-9d0e-1c2a0f6b2a11",
    "created_at": "2025-01-02T03:04:05.123456789Z",
    "data": {"user_id": 42, "name": "alice", "admin": False, "roles": ["a", "b"], "note": "x\u00e9"},
    "expires_at": "2999-01-01T00:00:00.000000000+02:00",
}


def test_reads_a_cookie_built_by_openssl(tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(SESSION_JSON))
    token = _sh(BUILD_WITH_OPENSSL, WORK=str(tmp_path), PLAIN=str(plain), SECRET=SECRET,
                KEYHEX=SECRET.encode()[:32].hex(), IVHEX="00112233445566778899aabbccddeeff")
    (tmp_path / "c.txt").write_text(token + "\n")
    store = open_sync(f"cookie://{tmp_path / 'c.txt'}?gzip=never")
    got = {r.key: r.value for p in store.scan() for r in p.records}
    assert got == {b"user_id": b"42", b"name": b"alice", b"admin": b"false", b"roles": b'["a","b"]',
                   b"note": "x\u00e9".encode()}
    # Editing one member keeps the others' JSON types and the envelope.
    store.set(b"name", b"bob")
    again = open_sync(f"cookie://{tmp_path / 'c.txt'}")
    doc = json.loads(_sh(OPEN_WITH_OPENSSL, WORK=str(tmp_path), TOKEN=again.token() or "", SECRET=SECRET,
                         KEYHEX=SECRET.encode()[:32].hex()))
    assert doc["data"] == {**SESSION_JSON["data"], "name": "bob"}
    assert doc["session_id"] == SESSION_JSON["session_id"]


def test_reads_gzip_and_pbkdf2_cookie_built_by_openssl(tmp_path: Path) -> None:
    plain = tmp_path / "plain.json.gz"
    raw = tmp_path / "plain.json"
    raw.write_text(json.dumps(SESSION_JSON))
    _sh(f'gzip -n -c "{raw}" > "{plain}"')
    key = _sh(PBKDF2_WITH_OPENSSL, SECRET=SECRET)
    assert len(key) == 64
    token = _sh(BUILD_WITH_OPENSSL, WORK=str(tmp_path), PLAIN=str(plain), SECRET=SECRET, KEYHEX=key,
                IVHEX="ffeeddccbbaa99887766554433221100")
    (tmp_path / "c.txt").write_text(token)
    store = open_sync(f"cookie://{tmp_path / 'c.txt'}?kdf=pbkdf2")
    assert store.get(b"user_id").value == b"42"
    # Without key derivation the signature verifies (same secret) but the AES key differs.
    with pytest.raises(AuthError, match="does not decrypt"):
        open_sync(f"cookie://{tmp_path / 'c.txt'}")


def test_openssl_opens_a_cookie_written_by_kvctl(tmp_path: Path) -> None:
    store = open_sync(f"cookie://{tmp_path / 'c.txt'}?gzip=never")
    store.set_many([Record(b"user_id", b"7"), Record(b"name", b"carol"), Record(b"\xff\x00", b"\x80bin")])
    token = (tmp_path / "c.txt").read_text().strip()
    doc = json.loads(_sh(OPEN_WITH_OPENSSL, WORK=str(tmp_path), TOKEN=token, SECRET=SECRET,
                         KEYHEX=SECRET.encode()[:32].hex()))
    assert doc["data"]["user_id"] == 7 and doc["data"]["name"] == "carol"
    assert set(doc) == {"session_id", "created_at", "data", "expires_at"}
    escaped = {k: v for k, v in doc["data"].items() if k.startswith("$b64:")}
    assert len(escaped) == 1


def test_gzip_kdf_cookie_written_by_kvctl_opens_with_openssl_and_gunzip(tmp_path: Path) -> None:
    store = open_sync(f"cookie://{tmp_path / 'c.txt'}?kdf=pbkdf2&gzip=always")
    store.set(b"k", b"v")
    key = _sh(PBKDF2_WITH_OPENSSL, SECRET=SECRET)
    doc = json.loads(_sh(OPEN_WITH_OPENSSL.strip() + " | gunzip", WORK=str(tmp_path), TOKEN=store.token() or "",
                         SECRET=SECRET, KEYHEX=key))
    assert doc["data"] == {"k": "v"}


def test_legacy_data_digest_form_is_read(tmp_path: Path) -> None:
    store = open_sync(f"cookie://{tmp_path / 'a.txt'}")
    store.set(b"k", b"v")
    data, digest = json.loads(base64.urlsafe_b64decode(store.token() or ""))
    (tmp_path / "b.txt").write_text(f"session={data}--{digest}; Path=/; HttpOnly")
    assert open_sync(f"cookie://{tmp_path / 'b.txt'}").get(b"k").value == b"v"
    (tmp_path / "c.txt").write_text(f"{data}--{digest}")
    assert open_sync(f"cookie://{tmp_path / 'c.txt'}").get(b"k").value == b"v"
    (tmp_path / "d.txt").write_text(f"_app_session={store.token()}; Secure")  # another cookie name
    assert open_sync(f"cookie://{tmp_path / 'd.txt'}").get(b"k").value == b"v"


# -- rejection --------------------------------------------------------------------------------------
def _token(tmp_path: Path) -> str:
    store = open_sync(f"cookie://{tmp_path / 'src.txt'}")
    store.set_many([Record(b"user", b"alice"), Record(b"role", b"admin")])
    return store.token() or ""


def _open_token(tmp_path: Path, token: str, options: str = "") -> None:
    path = tmp_path / "t.txt"
    path.write_text(token)
    open_sync(f"cookie://{path}{options}")


def test_tampered_data_is_rejected(tmp_path: Path) -> None:
    data, digest = json.loads(base64.urlsafe_b64decode(_token(tmp_path)))
    flipped = data[:10] + ("A" if data[10] != "A" else "B") + data[11:]
    forged = base64.urlsafe_b64encode(json.dumps([flipped, digest]).encode()).decode()
    with pytest.raises(AuthError, match="does not verify"):
        _open_token(tmp_path, forged)


def test_truncated_cookie_is_corrupt(tmp_path: Path) -> None:
    token = _token(tmp_path).rstrip("=")  # dropping base64 padding alone loses nothing
    for cut in (1, 2, 7, len(token) // 2):
        with pytest.raises((CorruptError, AuthError)):
            _open_token(tmp_path, token[:-cut])
    with pytest.raises(CorruptError, match="not a Session cookie"):
        _open_token(tmp_path, "garbage!!")


def test_wrong_secret_is_an_auth_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = _token(tmp_path)
    monkeypatch.setenv("KVCTL_COOKIE_SECRET", "another secret that is long enough!!")
    with pytest.raises(AuthError) as info:
        _open_token(tmp_path, token)
    assert "another secret" not in str(info.value)


def test_secret_never_from_url_and_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadURLError, match="never goes in the URL"):
        open_sync(f"cookie://{tmp_path / 'c.txt'}?secret=abc")
    monkeypatch.delenv("KVCTL_COOKIE_SECRET")
    with pytest.raises(UsageError, match="no cookie secret"):
        open_sync(f"cookie://{tmp_path / 'c.txt'}")
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    store = open_sync(f"cookie://{tmp_path / 'c.txt'}?secret_file={secret_file}")
    store.set(b"k", b"v")
    monkeypatch.setenv("MY_SECRET", SECRET)
    assert open_sync(f"cookie://{tmp_path / 'c.txt'}?secret_env=MY_SECRET").get(b"k") is not None
    monkeypatch.setenv("SHORT", "short")
    with pytest.raises(UsageError, match="at least 32"):
        open_sync(f"cookie://{tmp_path / 'c.txt'}?secret_env=SHORT")


def test_limit_is_enforced_and_nothing_written(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    store = open_sync(f"cookie://{path}")
    store.set(b"a", os.urandom(900).hex().encode())  # incompressible text
    before = path.read_bytes()
    with pytest.raises(LimitError, match=r"over the 4,096-byte limit by [\d,]+ bytes") as info:
        store.set_many([Record(b"b", os.urandom(900).hex().encode()), Record(b"c", os.urandom(900).hex().encode())])
    assert "nothing was written" in str(info.value)
    assert path.read_bytes() == before
    assert store.get(b"b") is None and store.count() == 1
    assert open_sync(f"cookie://{path}").count() == 1


def test_gzip_fits_more(tmp_path: Path) -> None:
    store = open_sync(f"cookie://{tmp_path / 'c.txt'}?gzip=always")
    store.set(b"big", b"abc" * 3000)  # 9 kB of text compresses far under the limit
    assert open_sync(f"cookie://{tmp_path / 'c.txt'}").get(b"big").value == b"abc" * 3000


def test_ttl_is_refused_and_session_expiry_hides_data(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    store = open_sync(f"cookie://{path}?timeout=1s")
    with pytest.raises(UnsupportedError):
        store.set(b"k", b"v", ttl_ms=1000)
    store.set(b"k", b"v")
    assert store.stats()["expired"] is False
    doc = store._doc
    doc.set_expiry(1000)  # 1970: long expired
    assert store.get(b"k") is None and store.count() == 0
    stats = store.stats()
    assert stats["expired"] is True and "include_expired" in stats["hint"]
    store.set(b"fresh", b"1")  # like Session: writing to an expired session starts a new one
    assert [r.key for p in store.scan() for r in p.records] == [b"fresh"]


def test_type_preservation_and_reversible_mapping(tmp_path: Path) -> None:
    from kvctl_plugins.cookie.session import json_to_value, value_to_json

    for raw in [b"42", b"-1.5", b"true", b"null", b'{"a":1}', b"[1,2]", b" 42", b"1e2", b"042", b"",
                b"text", b'"quoted"', b"\xff\xfe", b'{"$b64":"AA=="}', "é".encode()]:
        for existing in (None, "a string", 7):
            assert json_to_value(value_to_json(raw, existing)) == raw, (raw, existing)
    assert value_to_json(b"43", "42") == "43"  # a string member stays a string
    assert value_to_json(b"43", 42) == 43


def test_another_writer_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    first = open_sync(f"cookie://{path}")
    second = open_sync(f"cookie://{path}")
    first.set(b"a", b"1")
    second.set(b"b", b"2")  # reloads the file first: a's write survives
    assert {r.key for p in open_sync(f"cookie://{path}").scan() for r in p.records} == {b"a", b"b"}


def test_file_mode_and_no_temp_left(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    open_sync(f"cookie://{path}").set(b"k", b"v")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]
    assert path.stat().st_mode & 0o077 == 0


def test_terminal_mode_reads_stdin_and_prints_new_cookie(tmp_path: Path) -> None:
    source = open_sync(f"cookie://{tmp_path / 'c.txt'}")
    source.set(b"user", b"alice")
    script = (
        "from kvctl.testing import open_sync\n"
        "s = open_sync('cookie://-')\n"
        "assert s.get(b'user').value == b'alice'\n"
        "s.set(b'user', b'bob')\n"
        "s.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], input=source.token(), capture_output=True,
                          text=True, check=True, env={**os.environ, "KVCTL_COOKIE_SECRET": SECRET})
    (tmp_path / "new.txt").write_text(done.stdout)
    assert open_sync(f"cookie://{tmp_path / 'new.txt'}").get(b"user").value == b"bob"


def test_legacy_form_whose_data_contains_the_separator(tmp_path: Path) -> None:
    # URL-safe base64 data can contain "--"; the digest after the real separator is 32 bytes
    for attempt in range(3000):  # each token holds "--" with ~1.5% chance: found after ~70
        store = open_sync(f"cookie://{tmp_path / f'a{attempt}.txt'}")
        store.set(b"k", b"v%d" % attempt)
        data, digest = json.loads(base64.urlsafe_b64decode(store.token() or ""))
        if "--" in data:
            break
    else:
        pytest.fail("no random IV produced '--' in 3000 tries")  # (0.985 ** 3000: never)
    (tmp_path / "b.txt").write_text(f"{data}--{digest}")
    assert open_sync(f"cookie://{tmp_path / 'b.txt'}").get(b"k").value == b"v%d" % attempt
