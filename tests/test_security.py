"""Issue 17: verify-and-load from the same bytes, the self-repairing cache, name and range checks."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import mlops_core
from mlops_core import api
from mlops_core.bundle import VerifiedFiles, load_bundle, open_verified, save_bundle
from mlops_core.entities import (MAX_DESCRIPTION_LENGTH, MAX_TAG_VALUE_LENGTH, MAX_VERSION, ModelURI,
                                 validate_alias, validate_backend_name, validate_description, validate_model_name,
                                 validate_tag_key, validate_tag_value, validate_version)
from mlops_core.errors import IntegrityError, InvalidInputError
from mlops_core.stack import Stack
from mlops_core.testing.models import DoublingModel
from mlops_core.testing.race import FileSwapper, hostile_pickle

# Enough loads that a check-then-reopen loader runs the hostile pickle many times
# (hundreds of times with the code before the fix); the count must stay 0.
LOADS = 1000


def _race(load, target: Path, counter: Path, work: Path) -> dict[str, int]:
    outcomes = {"loaded": 0, "refused": 0}
    good = target.read_bytes()
    with FileSwapper(target, good, hostile_pickle(counter), work) as swapper:
        for _ in range(LOADS):
            try:
                model = load()
            except IntegrityError:
                outcomes["refused"] += 1
            else:
                assert model.predict([1.0]) == [2.0]
                outcomes["loaded"] += 1
    outcomes["swaps"] = swapper.swaps
    outcomes["hostile_runs"] = len(counter.read_bytes()) if counter.exists() else 0
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize("tag", ["small", "x" * (2 << 20)], ids=["in-memory", "held-descriptor"])
def test_swapping_the_pickle_during_loads_of_a_bundle_folder_never_runs_it(tmp_path, tag):
    info = save_bundle(DoublingModel(tag), tmp_path / "bundle")
    counter = tmp_path / "hostile-runs"
    result = _race(lambda: load_bundle(info.path).model, info.path / "model.pkl", counter, tmp_path / "swap")
    assert result["swaps"] > 0 and result["refused"] > 0, result  # the race really ran
    assert result["hostile_runs"] == 0, result


@pytest.mark.slow
def test_swapping_the_pickle_in_the_models_cache_never_runs_it(tmp_path):
    stack = Stack()
    mlops_core.register("racy", DoublingModel(), stack=stack)
    assert mlops_core.load("models:/racy/1", stack=stack).predict([1.0]) == [2.0]  # fills the cache
    cached = next((stack.home / "cache" / "bundles").iterdir())
    counter = tmp_path / "hostile-runs"
    result = _race(lambda: mlops_core.load("models:/racy/1", stack=stack), cached / "model.pkl", counter,
                   tmp_path / "swap")
    assert result["swaps"] > 0, result
    assert result["hostile_runs"] == 0, result
    stack.close()


def test_verified_files_are_the_bytes_that_were_checked(tmp_path):
    info = save_bundle(DoublingModel(), tmp_path / "bundle")
    files = open_verified(info.path, expected_digest=info.digest)
    (info.path / "model.pkl").write_bytes(b"replaced after the check")
    assert files.read_bytes("model.pkl") != b"replaced after the check"
    with files.open("model.pkl") as f:
        import pickle

        assert pickle.load(f) == DoublingModel()
    private = files.materialize()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert (private / "model.pkl").read_bytes() == files.read_bytes("model.pkl")


def test_symlinked_and_special_files_are_refused(tmp_path):
    info = save_bundle(DoublingModel(), tmp_path / "bundle")
    payload = info.path / "model.pkl"
    elsewhere = tmp_path / "elsewhere.pkl"
    elsewhere.write_bytes(payload.read_bytes())  # same bytes: only the link itself is wrong
    payload.unlink()
    payload.symlink_to(elsewhere)
    with pytest.raises(IntegrityError, match="symbolic links"):
        load_bundle(info.path)
    payload.unlink()
    os.mkfifo(payload)  # a FIFO would block a plain open() forever
    with pytest.raises(IntegrityError, match="regular file"):
        load_bundle(info.path)


def test_large_files_are_spooled_privately(tmp_path, monkeypatch):
    import mlops_core.bundle as bundle

    info = save_bundle(DoublingModel(), tmp_path / "bundle")
    monkeypatch.setattr(bundle, "SPOOL_LIMIT", 10)
    files = open_verified(info.path)
    (info.path / "model.pkl").write_bytes(b"x")
    with files.open("model.pkl") as a, files.open("model.pkl") as b:
        assert a.read(5) == b.read(5)  # independent positions over the same private copy
        assert a.read() == files.read_bytes("model.pkl")[5:]
    # The format loads from the spooled copy too.
    info2 = save_bundle(DoublingModel("big"), tmp_path / "bundle2")
    assert load_bundle(info2.path).model == DoublingModel("big")


def test_old_formats_get_a_private_verified_copy(tmp_path):
    """A format with only load(directory, manifest) never sees the bundle folder itself."""
    from mlops_core.interfaces import ModelFormat
    from mlops_core.plugins import PluginManager, hookimpl

    seen: list[Path] = []

    class PathFormat(ModelFormat):
        name = "pathfmt"

        def can_save(self, model):
            return True

        def save(self, model, directory):
            (directory / "w.txt").write_text(model.tag)
            return ["w.txt"]

        def load(self, directory, manifest):
            seen.append(Path(directory))
            return DoublingModel((Path(directory) / "w.txt").read_text())

    class Provider:
        @hookimpl
        def mlops_register_backends(self, backends):
            backends.add_format("pathfmt", lambda config, context: PathFormat())

    pm = PluginManager(autoload=False)
    pm.register(Provider(), name="p")
    info = save_bundle(DoublingModel("x"), tmp_path / "b", format="pathfmt", plugins=pm)
    assert load_bundle(info.path, plugins=pm).model == DoublingModel("x")
    assert seen and seen[0] != info.path and not seen[0].is_relative_to(tmp_path)
    assert stat.S_IMODE(seen[0].stat().st_mode) == 0o700


def test_a_corrupt_cache_is_repaired_on_the_next_load(tmp_path):
    stack = Stack()
    mlops_core.register("m", DoublingModel(), stack=stack)
    mlops_core.load("models:/m/1", stack=stack)
    cached = next((stack.home / "cache" / "bundles").iterdir())
    assert stat.S_IMODE((stack.home / "cache").stat().st_mode) == 0o700
    (cached / "model.pkl").write_bytes(b"garbage")
    assert mlops_core.load("models:/m/1", stack=stack) == DoublingModel()  # before: IntegrityError, every time
    (cached / "manifest.json").write_bytes(b"{}")  # a cache folder holding something else
    assert mlops_core.load("models:/m/1", stack=stack) == DoublingModel()
    (cached / "model.pkl").write_bytes(b"garbage")
    _version, path = api.resolve_bundle("models:/m/1", stack=stack)
    assert (path / "model.pkl").read_bytes() != b"garbage"
    stack.close()


def test_a_corrupt_store_is_still_an_error(tmp_path):
    stack = Stack()
    v = mlops_core.register("m", DoublingModel(), stack=stack)
    manifest = stack.storage.read_bytes("blobs/sha256/" + v.artifact.digest.split(":")[1])
    import json

    payload = json.loads(manifest)["files"][0]["sha256"]
    stack.storage.write_bytes("blobs/sha256/" + payload, b"tampered in the store")
    with pytest.raises(IntegrityError):
        mlops_core.load("models:/m/1", stack=stack)
    stack.close()


def test_home_is_private(tmp_path):
    stack = Stack()
    mlops_core.register("m", DoublingModel(), stack=stack)
    assert stat.S_IMODE(stack.home.stat().st_mode) == 0o700
    stack.close()


# ---------------------------------------------------------------- names
_VALIDATORS = {
    "model name": (validate_model_name, r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"),
    "alias": (validate_alias, r"[A-Za-z][A-Za-z0-9_-]{0,62}"),
    "tag key": (validate_tag_key, r"[A-Za-z0-9_.\-/:]{1,250}"),
    "backend name": (validate_backend_name, r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"),
}
_TRICKY = st.sampled_from(["", "\n", "ok\n", "ok\r", "ok\x00", "\u0130", "é", "ｍodel", "١٢", "a" * 300, " a", "a ",
                           "ok\u2028", "latest"])


@pytest.mark.parametrize("what", sorted(_VALIDATORS))
def test_name_validators_reject_a_trailing_newline(what):
    validator, _ = _VALIDATORS[what]
    with pytest.raises(InvalidInputError):
        validator("prod\n")


@pytest.mark.parametrize("what", sorted(_VALIDATORS))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.text(max_size=300), _TRICKY,
                       st.text(alphabet="abcXYZ019._-/:\n\r\t ", max_size=70)))
@example(value="iris\n")
def test_name_validators_accept_exactly_their_ascii_pattern(what, value):
    validator, pattern = _VALIDATORS[what]
    ok = re.fullmatch(pattern, value, flags=re.ASCII) is not None and not (what == "alias" and value == "latest")
    if ok:
        assert validator(value) == value
    else:
        with pytest.raises(InvalidInputError):
            validator(value)


@settings(max_examples=200)
@given(st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=5), st.none()))
@example(99999999999999999999999)
@example(MAX_VERSION + 1)
def test_version_numbers_are_range_checked(value):
    ok = type(value) is int and 1 <= value <= MAX_VERSION
    if ok:
        assert validate_version(value) == value
    else:
        with pytest.raises(InvalidInputError):
            validate_version(value)


@settings(max_examples=200)
@given(st.one_of(st.text(alphabet="0123456789", min_size=1, max_size=40), st.text(max_size=12)))
@example("99999999999999999999999")
@example("2147483648")
@example("²")
@example("1\n")
def test_model_uri_versions_are_range_checked(ver):
    uri = f"models:/ok/{ver}"
    if re.fullmatch(r"[0-9]{1,64}", ver) and 1 <= int(ver) <= MAX_VERSION:
        assert ModelURI.parse(uri).version == int(ver)
    else:
        with pytest.raises(InvalidInputError):
            ModelURI.parse(uri)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=20), st.integers(0, 3))
def test_tag_values_and_descriptions_have_a_size_limit(text, extra):
    for validator, limit in ((validate_tag_value, MAX_TAG_VALUE_LENGTH), (validate_description, MAX_DESCRIPTION_LENGTH)):
        value = (text.replace("\x00", "") or "x") * 1
        assert validator(value) == value
        with pytest.raises(InvalidInputError, match="limit"):
            validator("x" * (limit + 1 + extra))
        with pytest.raises(InvalidInputError, match="NUL"):
            validator(value + "\x00")


def test_huge_version_through_the_api_and_the_cli_is_a_clear_error(run_cli, tmp_path):
    stack = Stack()
    mlops_core.register("ok", DoublingModel(), stack=stack)
    with pytest.raises(InvalidInputError, match="versions are integers"):
        mlops_core.load("models:/ok/99999999999999999999999", stack=stack)
    with pytest.raises(InvalidInputError):
        mlops_core.set_alias("ok", "prod", 99999999999999999999999, stack=stack)
    with pytest.raises(InvalidInputError):
        api.get_model("iris\n", stack=stack)
    with pytest.raises(InvalidInputError):
        api.set_tag("ok", "k", "v" * (MAX_TAG_VALUE_LENGTH + 1), stack=stack)
    stack.close()
    proc = run_cli("models", "show", "models:/ok/99999999999999999999999")
    assert proc.returncode != 70 and "Traceback" not in proc.stderr, proc.stderr
    assert "error:" in proc.stderr and "hint:" in proc.stderr
    proc = run_cli("models", "alias", "ok", "prod", "99999999999999999999999")
    assert proc.returncode != 70 and "Traceback" not in proc.stderr, proc.stderr
    proc = run_cli("models", "save", "iris\n", "nowhere")
    assert proc.returncode != 70 and "Traceback" not in proc.stderr, proc.stderr


# ------------------------------------------------------- stack file search
def test_the_stack_file_search_stops_at_a_repository_root(tmp_path, monkeypatch):
    from mlops_core.stack import find_config_file

    (tmp_path / "mlops.toml").write_text('[deployer]\nbackend = "process"\npython = "/tmp/evil"\n')
    repo = tmp_path / "repo"
    (repo / "src" / "pkg").mkdir(parents=True)
    assert find_config_file(repo / "src" / "pkg") == tmp_path / "mlops.toml"  # no .git yet: found above
    (repo / ".git").write_text("gitdir: elsewhere\n")  # a worktree's .git is a file
    assert find_config_file(repo / "src" / "pkg") is None
    (repo / "mlops.toml").write_text("")
    assert find_config_file(repo / "src" / "pkg") == repo / "mlops.toml"


def test_the_stack_file_search_stops_at_home(tmp_path, monkeypatch):
    from mlops_core.stack import find_config_file

    (tmp_path / "mlops.toml").write_text("")
    home = tmp_path / "home" / "user"
    (home / "work").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    assert find_config_file(home / "work") is None
    (home / "mlops.toml").write_text("")
    assert find_config_file(home / "work") == home / "mlops.toml"


# ---------------------------------------------------------------- mlops gc
_SLOW_WRITER = r"""
import os, sys, time
from pathlib import Path
os.environ["MLOPS_HOME"] = sys.argv[2]
import mlops_core
from mlops_core.stack import Stack

marker = Path(sys.argv[3])

class Stall:
    '''Pickles fine but stalls in the middle of the save, so the writer can be killed there.'''
    def __reduce__(self):
        marker.touch()
        time.sleep(600)  # the behaviour under test: a writer stuck mid-save until the test kills it
        return (int, ())

    def predict(self, x):
        return x

class StallingSource:
    def __init__(self):
        self.sent = False
    def read(self, n=-1):
        if not self.sent:
            self.sent = True
            return b"x" * (1 << 20)
        marker.touch()
        time.sleep(600)  # the behaviour under test: a stream stalled mid-write until the test kills it
        return b""

if sys.argv[1] == "bundle":
    mlops_core.save_bundle(Stall(), Path(sys.argv[2]) / "bundles" / "b1")
else:
    Stack().storage.write("blobs/sha256/" + "0" * 64, StallingSource())
"""


def _start_writer(kind: str, home: Path, marker: Path):
    import subprocess
    import sys

    from mlops_core.testing.waiting import wait_until

    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, kind, str(home), str(marker)])
    try:
        wait_until(marker.exists, 120, what="the writer to stall mid-save", proc=proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


@pytest.fixture(autouse=True)
def _private_tmpdir(request, tmp_path, monkeypatch):
    """gc also collects ``mlops-verified-*`` copies of dead processes in the system temp folder: give
    each gc test its own, so other processes' leftovers (other test runs on the machine) are not counted."""
    import tempfile

    if "gc" not in request.node.name:
        return

    private = tmp_path / "systmp"
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", None)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bundle", "blob"])
def test_gc_removes_what_killed_writers_left_and_never_a_live_write(tmp_path, kind):
    import signal
    import time

    home = tmp_path / ".mlops"
    stack = Stack()
    assert stack.home == home
    live = _start_writer(kind, home, tmp_path / "live")
    killed = _start_writer(kind, home, tmp_path / "killed")
    try:
        before = api.gc(older_than=0, dry_run=True, stack=stack)
        assert before == [], "live writers hold their temporaries' locks"
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        found = api.gc(older_than=0, dry_run=True, stack=stack)
        assert len(found) == 1 and found[0].size >= (1 << 20 if kind == "blob" else 0), found
        leftover = Path(found[0].where)
        assert leftover.exists() and ".tmp-" in leftover.name
        assert api.gc(stack=stack) == []  # younger than the default hour: kept
        old = time.time() - 7200
        for p in [leftover, *leftover.rglob("*")]:
            os.utime(p, (old, old))
        assert [lo.where for lo in api.gc(stack=stack)] == [str(leftover)]
        assert not leftover.exists()
        # The live writer's temporary is still there, untouched.
        live_tmp = [p for p in home.rglob("*") if ".tmp-" in p.name]
        assert len(live_tmp) == 1 and live.poll() is None
    finally:
        for proc in (live, killed):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stack.close()


def test_gc_cli_and_doctor_report_leftovers(run_cli, tmp_path):
    stale = tmp_path / ".mlops" / "bundles" / (".b.tmp-" + "a" * 32)
    stale.mkdir(parents=True)
    (stale / "model.pkl").write_bytes(b"x" * 100)
    old = 1_000_000_000
    for p in (stale / "model.pkl", stale):
        os.utime(p, (old, old))
    doctor = run_cli("doctor", "--json", "storage")
    import json

    detail = [c["detail"] for c in json.loads(doctor.stdout)["checks"] if c["check"] == "leftovers"]
    assert detail and detail[0].startswith("1 temporaries (100 bytes)"), doctor.stdout
    dry = run_cli("gc", "--dry-run")
    assert dry.returncode == 0 and "would remove 1 leftover(s), 100 bytes" in dry.stdout and stale.exists()
    done = run_cli("gc", "--older-than", "30m", "--json")
    assert json.loads(done.stdout)["bytes"] == 100 and not stale.exists()
    assert "nothing to clean" in run_cli("gc").stdout


# ---------------------------------------------------------------- signing
def _signed_stack(tmp_path: Path, *, require: bool = True, sign: bool = True, trusted: str = "publisher") -> Stack:
    from mlops_core.signing import generate_key
    from mlops_core.stack import load_config

    for name in ("publisher", "stranger"):
        if not (tmp_path / f"{name}.key").exists():
            generate_key(tmp_path / f"{name}.key")
    lines = ["[security]", f"require_signature = {'true' if require else 'false'}",
             f'trusted_keys = ["{trusted}.key.pub"]']
    if sign:
        lines.append('signing_key = "publisher.key"')
    (tmp_path / "mlops.toml").write_text("\n".join(lines) + "\n")
    return Stack(load_config(tmp_path / "mlops.toml"))


def test_signed_versions_load_and_unsigned_or_tampered_ones_are_refused(tmp_path):
    from mlops_core.signing import SIGNATURE_TAG

    (tmp_path / ".mlops").mkdir()
    unsigned_stack = _signed_stack(tmp_path, require=False, sign=False)
    mlops_core.register("m", DoublingModel("unsigned"), stack=unsigned_stack)  # v1: nobody signed it
    unsigned_stack.close()

    stack = _signed_stack(tmp_path)
    v2 = mlops_core.register("m", DoublingModel("signed"), stack=stack)
    assert v2.tags[SIGNATURE_TAG].startswith("ed25519:")
    assert mlops_core.load("models:/m/2", stack=stack) == DoublingModel("signed")
    assert stat.S_IMODE((tmp_path / "publisher.key").stat().st_mode) == 0o600

    with pytest.raises(IntegrityError, match="not signed"):
        mlops_core.load("models:/m/1", stack=stack)
    with pytest.raises(IntegrityError, match="not signed"):
        api.resolve_bundle("models:/m/1", stack=stack)  # build and deploy go through here
    good = v2.tags[SIGNATURE_TAG]
    # A flipped signature character, and a valid signature moved onto another version's digest.
    flipped = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    for forged, version in ((flipped, 2), (good, 1)):
        stack.registry.set_tag("m", SIGNATURE_TAG, forged, version=version)
        with pytest.raises(IntegrityError, match="does not verify"):
            mlops_core.load(f"models:/m/{version}", stack=stack)
    stack.registry.set_tag("m", SIGNATURE_TAG, "rubbish", version=2)
    with pytest.raises(IntegrityError, match="malformed"):
        mlops_core.load("models:/m/2", stack=stack)
    api.sign("models:/m/2", stack=stack)
    assert mlops_core.load("models:/m/2", stack=stack) == DoublingModel("signed")
    api.sign("models:/m/1", key=tmp_path / "stranger.key", stack=stack)
    with pytest.raises(IntegrityError, match="not in \\[security\\] trusted_keys"):
        mlops_core.load("models:/m/1", stack=stack)
    with pytest.raises(IntegrityError, match="carries no signature"):
        mlops_core.load(str(api.resolve_bundle("models:/m/2", stack=stack)[1]), stack=stack)
    stack.close()


def test_requiring_signatures_without_a_key_or_trusted_keys_is_a_config_error(tmp_path):
    from mlops_core.errors import ConfigError
    from mlops_core.stack import load_config

    stack = _signed_stack(tmp_path, sign=False)
    with pytest.raises(ConfigError, match="signing_key"):
        mlops_core.register("m", DoublingModel(), stack=stack)
    stack.close()
    (tmp_path / "mlops.toml").write_text('[security]\nsigning_key = "publisher.key"\n')
    stack = Stack(load_config(tmp_path / "mlops.toml"))
    mlops_core.register("m", DoublingModel(), stack=stack)
    stack.close()
    (tmp_path / "mlops.toml").write_text("[security]\nrequire_signature = true\n")
    stack = Stack(load_config(tmp_path / "mlops.toml"))
    with pytest.raises(ConfigError, match="no trusted_keys"):
        mlops_core.load("models:/m/1", stack=stack)
    stack.close()
    (tmp_path / "mlops.toml").write_text("[security]\nrequire_sigature = true\n")
    with pytest.raises(ConfigError, match="require_sigature"):
        load_config(tmp_path / "mlops.toml")


def test_signing_is_never_imported_by_import_mlops_core():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, mlops_core, mlops_core.api, mlops_core.bundle; "
                          "print(any(m.startswith('cryptography') for m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_keys_and_sign_cli(run_cli, tmp_path):
    import json

    made = run_cli("keys", "new", "k", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["public_key"].endswith("k.pub")
    assert run_cli("keys", "new", "k").returncode != 0  # never overwrites a key
    stack = Stack()
    mlops_core.register("m", DoublingModel(), stack=stack)
    stack.close()
    signed = run_cli("models", "sign", "models:/m/1", "--key", "k", "--json")
    assert signed.returncode == 0 and json.loads(signed.stdout)["signature"].startswith("ed25519:"), signed.stderr
    (tmp_path / "mlops.toml").write_text('[security]\nrequire_signature = true\ntrusted_keys = ["k.pub"]\n')
    shown = run_cli("models", "show", "models:/m/1")
    assert shown.returncode == 0, shown.stderr


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=40), _TRICKY, st.text(alphabet="ab-9\n", max_size=12)))
@example("mlops-foo\n")
def test_plugin_names_are_matched_whole(value):
    from mlops_core.scaffold import plugin_names

    if re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", value, flags=re.ASCII):
        assert plugin_names(value, "storage")
    else:
        with pytest.raises(InvalidInputError):
            plugin_names(value, "storage")


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=40), st.text(alphabet="ab./\\\n\x00", max_size=12)))
@example("a/b\n")
def test_artifact_keys_never_escape_or_carry_control_characters(key):
    import posixpath

    from mlops_core.interfaces import validate_key

    try:
        validate_key(key)
    except InvalidInputError:
        return
    parts = key.split("/")
    assert key and not key.startswith("/") and "\\" not in key and posixpath.normpath(key) == key
    assert not any(p in ("", ".", "..") for p in parts)
    assert not any(ord(c) < 0x20 for c in key)


@pytest.mark.parametrize("name", ["ok\n", "", "é", "a b", "x" * 65])
def test_plugins_cannot_register_backends_with_bad_names(name):
    from mlops_core.errors import PluginError
    from mlops_core.plugins import PluginManager, hookimpl

    class Provider:
        @hookimpl
        def mlops_register_backends(self, backends):
            backends.add_format(name, lambda config, context: None)

    pm = PluginManager(autoload=False)
    pm.register(Provider(), name="bad-names")
    assert "invalid format backend name" in str(pm.failures[-1].error)
    assert name not in pm.catalog.names("format")


def test_stack_show_leaves_no_folder_behind(run_cli, tmp_path):
    shown = run_cli("stack", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    import json

    data = json.loads(shown.stdout)
    assert data["config_file"] is None and isinstance(data["programs"], list)
    assert not (tmp_path / ".mlops").exists()


def test_big_files_others_can_write_are_copied_and_private_ones_are_held_open(tmp_path):
    import pickle

    info = save_bundle(DoublingModel("x" * (3 << 20)), tmp_path / "bundle")
    payload = info.path / "model.pkl"
    good = payload.read_bytes()
    # Group/other-writable: someone else could rewrite the inode in place, so the bytes are copied.
    payload.chmod(0o666)
    files = open_verified(info.path)
    assert files.in_memory("model.pkl")
    with open(payload, "r+b") as f:  # in place, same inode
        f.write(b"\x00" * 16)
    assert files.read_bytes("model.pkl") == good
    files.close()
    payload.write_bytes(good)
    payload.chmod(0o644)
    # Ours and private: verified through the descriptor kept open, no copy; a rename cannot reach it.
    files = open_verified(info.path)
    assert not files.in_memory("model.pkl")
    replacement = tmp_path / "other.pkl"
    replacement.write_bytes(pickle.dumps(DoublingModel("swapped")))
    os.replace(replacement, payload)
    with files.open("model.pkl") as f:
        assert pickle.load(f) == DoublingModel("x" * (3 << 20))
    files.close()
