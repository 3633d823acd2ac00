"""A small client for the OCI distribution API (``/v2/``), on ``requests``.

What it does: read manifests (image indexes included), configs and blobs; check
blobs with ``HEAD``; upload blobs monolithically (``POST`` + one ``PUT``) or in
chunks (``POST`` + ``PATCH``... + ``PUT``); mount blobs across repositories; put
manifests. Authentication follows the registry's ``WWW-Authenticate`` challenge:
HTTP basic, or the bearer-token flow (token fetched from the realm with the
scope the registry asked for, cached per scope). Transient failures (connection
errors, 429, 5xx) are retried with exponential backoff, honouring
``Retry-After``. Registry error bodies (``{"errors": [{"code", "message",
"detail"}]}``) become :class:`RegistryError` messages that name the operation.

Pushes survive broken connections (issue 14.2):

* an upload session the registry broke (404 ``BLOB_UPLOAD_UNKNOWN``, a 5xx, a reset
  connection) is not retried into: the client asks the session's status
  (``GET`` on its location) and resumes a chunked upload from the registry's
  ``Range``; when the session is gone it is cancelled (``DELETE``) and the blob
  starts over in a fresh session;
* an upload's location is remembered under ``state_dir`` while it runs, so a push
  that was killed resumes the blob where the registry has it, or cancels the
  abandoned session;
* a blob the same registry holds in another repository this machine pushed to
  is mounted (``POST ?mount=&from=``) instead of uploaded;
* network failures are :class:`RegistryNetworkError` with a hint about the network.

Credentials: the stack's username/password, else Docker's ``config.json``:
``credHelpers`` (per registry), ``credsStore`` and ``auths``. Helpers are run with
the ``docker-credential-*`` protocol (``get``, the server on stdin, JSON out).
Bearer tokens are cached until their ``expires_in`` and fetched again on a 401.

Why not oras-py (the maintained OCI client): it has no resumable chunked uploads,
no session cleanup and no streaming from a file opener with progress, which are
this module's point; it would replace only the easy half (reads, manifests, auth).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping

import attrs

from mlops_core.errors import BackendUnavailableError, ConfigError, MlopsError, NotFoundError

from .reference import DOCKER_HUB, ImageReference, is_loopback

__all__ = [
    "RegistryError",
    "RegistryNotFoundError",
    "RegistryAuthError",
    "RegistryNetworkError",
    "PushStats",
    "RegistryClient",
    "MANIFEST_ACCEPT",
    "docker_config_credentials",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(MlopsError):
    """The registry refused a request; carries the HTTP status and the registry's error codes."""

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None,
                 codes: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.codes = codes


class RegistryNotFoundError(RegistryError, NotFoundError):
    """A repository, manifest or blob does not exist."""


class RegistryAuthError(RegistryError):
    """Missing or wrong credentials, or no permission for the operation."""

    exit_code = 3


class RegistryNetworkError(BackendUnavailableError):
    """The connection to the registry failed (refused, reset, timed out) after every retry."""


_NETWORK_HINT = ("the network to the registry failed (connection refused, reset or timed out): check that the "
                 "registry runs and is reachable (address, proxy, firewall; plain_http for a registry without TLS), "
                 "then run the push again: blobs already in the registry are skipped and a broken upload resumes")


class _SessionBroken(Exception):
    """An upload session failed mid-way (network error, 404 or 5xx): resume or start a fresh one."""

    def __init__(self, why: str, status: int | None = None) -> None:
        super().__init__(why)
        self.status = status


@attrs.define
class PushStats:
    """What a push did with each blob: how many were uploaded, mounted or already there."""

    uploaded: list[str] = attrs.field(factory=list)
    mounted: list[str] = attrs.field(factory=list)
    existing: list[str] = attrs.field(factory=list)
    bytes_uploaded: int = 0
    requests: int = 0
    #: Upload sessions restarted or resumed after a failure, and sessions cancelled with DELETE.
    restarts: int = 0
    resumes: int = 0
    cancelled: int = 0

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _docker_config(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    if path is None:
        folder = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
        path = os.path.join(folder, "config.json")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _registry_names(registry: str) -> list[str]:
    names = [registry, f"https://{registry}", f"http://{registry}"]
    if registry == DOCKER_HUB:
        names += ["docker.io", "index.docker.io", "https://index.docker.io/v1/"]
    return names


def credential_helper(helper: str, server: str) -> tuple[str, str] | None:
    """Run ``docker-credential-<helper> get`` (the Docker credential helper protocol) for ``server``."""
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        raise ConfigError(f"the Docker config names the credential helper {helper!r}, but "
                          f"docker-credential-{helper} is not on PATH",
                          hint=f"install docker-credential-{helper}, or remove it from ~/.docker/config.json "
                               "(credHelpers/credsStore) and give username/password in the stack settings")
    try:
        done = subprocess.run([program, "get"], input=server, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"the credential helper docker-credential-{helper} failed: {exc}",
                          hint="run `docker-credential-%s get` by hand to see why" % helper) from None
    if done.returncode != 0:
        if "credentials not found" in (done.stdout + done.stderr).lower():
            return None
        raise ConfigError(f"the credential helper docker-credential-{helper} failed for {server}: "
                          f"{(done.stderr or done.stdout).strip()[:300]}",
                          hint=f"check `echo {server} | docker-credential-{helper} get`")
    try:
        body = json.loads(done.stdout)
        return str(body["Username"]), str(body["Secret"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"the credential helper docker-credential-{helper} printed no credentials JSON",
                          hint="it must print {\"Username\": ..., \"Secret\": ...}") from None


def docker_config_credentials(registry: str, path: str | os.PathLike[str] | None = None) -> tuple[str, str] | None:
    """(username, password) for ``registry`` from Docker's ``config.json``: ``credHelpers``, ``credsStore``, ``auths``."""
    data = _docker_config(path)
    names = _registry_names(registry)
    helpers = data.get("credHelpers") or {}
    for name in names:
        if isinstance(helpers.get(name), str) and helpers[name]:
            return credential_helper(helpers[name], name)
    auths = data.get("auths") or {}
    for name in names:
        entry = auths.get(name)
        if isinstance(entry, dict) and entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return user, password
    store = data.get("credsStore")
    if isinstance(store, str) and store:
        # `docker login` stores the server as written in auths (an empty entry) or as the bare host.
        for name in [n for n in names if n in auths] or [registry]:
            found = credential_helper(store, name)
            if found:
                return found
    return None


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


def _error_text(response: Any) -> tuple[str, tuple[str, ...]]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        parts, codes = [], []
        for err in body["errors"]:
            if not isinstance(err, dict):
                continue
            code = str(err.get("code", "UNKNOWN"))
            codes.append(code)
            text = f"{code}: {err.get('message', '')}".rstrip(": ")
            detail = err.get("detail")
            if detail:
                text += f" ({json.dumps(detail, sort_keys=True)[:300]})"
            parts.append(text)
        return "; ".join(parts), tuple(codes)
    text = (response.text or "").strip().replace("\n", " ")[:300]
    return (text or response.reason or f"HTTP {response.status_code}"), ()


class RegistryClient:
    """Talks to one registry host. Thread-safe enough for sequential use from one build."""

    def __init__(
        self,
        registry: str,
        *,
        username: str | None = None,
        password: str | None = None,
        plain_http: bool | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 60.0,
        chunk_size: int = 16 << 20,
        verify: bool | str = True,
        session: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        import requests

        self.registry = registry
        if plain_http is None:
            plain_http = is_loopback(registry)
        host = "registry-1.docker.io" if registry == DOCKER_HUB else registry
        self.base_url = f"{'http' if plain_http else 'https'}://{host}"
        if username is None and password is None:
            found = docker_config_credentials(registry)
            if found:
                username, password = found
        self.username, self.password = username, password
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.timeout = timeout
        self.chunk_size = max(1, int(chunk_size))
        self.session = session or requests.Session()
        self.session.verify = verify
        self._sleep = sleep
        self._clock = clock
        self.state_dir = Path(state_dir) / re.sub(r"[^A-Za-z0-9_.-]", "_", registry) if state_dir else None
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}  # -> (token, expiry on self._clock)
        self._auth_header: dict[str, str] = {}  # scope key -> Authorization header value
        self._challenge: dict[str, dict[str, str]] = {}  # scope key -> the bearer challenge that gave its token
        self._basic: str | None = None
        self._lock = threading.Lock()
        self.stats = PushStats()

    # ------------------------------------------------------------- plumbing
    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def _credentials_hint(self) -> str:
        return (f"give the registry credentials in the stack settings (username/password), "
                f"or `docker login {self.registry}` so ~/.docker/config.json has them")

    def _fetch_token(self, params: Mapping[str, str], scope_key: str, *, fresh: bool = False) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryAuthError(f"registry {self.registry} asked for a bearer token without a realm",
                                    hint="the registry's auth configuration is broken")
        key = (realm, params.get("service", ""), params.get("scope", scope_key))
        with self._lock:
            cached = self._tokens.get(key)
            if cached and not fresh and self._clock() < cached[1]:
                return cached[0]
        query: dict[str, Any] = {}
        if params.get("service"):
            query["service"] = params["service"]
        if params.get("scope"):
            query["scope"] = params["scope"].split(" ")
        auth = (self.username, self.password or "") if self.username else None
        try:
            resp = self._send_raw("GET", realm, params=query, auth=auth, what="token request")
        except BackendUnavailableError as exc:
            raise BackendUnavailableError(f"cannot reach the token service {realm} of {self.registry}: {exc.message}",
                                          hint=exc.hint) from None
        if resp.status_code in (401, 403):
            raise RegistryAuthError(f"token service {realm} refused the credentials for {self.registry}",
                                    hint=self._credentials_hint(), status=resp.status_code)
        if resp.status_code >= 400:
            text, codes = _error_text(resp)
            raise RegistryError(f"token service {realm} answered {resp.status_code}: {text}", status=resp.status_code,
                                codes=codes, hint="check the registry's token service")
        try:
            body = resp.json()
            token = body.get("token") or body["access_token"]
        except (ValueError, KeyError, AttributeError):
            raise RegistryAuthError(f"token service {realm} returned no token",
                                    hint="the token service must answer {\"token\": ...}") from None
        try:
            lifetime = float(body.get("expires_in") or 60)  # the spec's default when absent
        except (TypeError, ValueError):
            lifetime = 60.0
        with self._lock:
            # Renew a little early, so a token does not expire between our check and the registry's.
            self._tokens[key] = (token, self._clock() + max(0.0, lifetime - min(10.0, lifetime / 10)))
        return token

    def _authorize(self, response: Any, scope_key: str) -> bool:
        """Prepare credentials after a 401 challenge; False when retrying cannot help."""
        header = response.headers.get("WWW-Authenticate", "")
        scheme, params = _parse_challenge(header)
        if scheme == "bearer":
            self._challenge[scope_key] = params
            token = self._fetch_token(params, scope_key)
            value = f"Bearer {token}"
            if self._auth_header.get(scope_key) == value:
                # The registry refused the token we hold (expired or revoked early): ask for a new one once.
                value = f"Bearer {self._fetch_token(params, scope_key, fresh=True)}"
                if self._auth_header.get(scope_key) == value:
                    return False
        elif scheme == "basic":
            if not self.username:
                return False
            value = "Basic " + base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
        else:
            return False
        if self._auth_header.get(scope_key) == value:
            return False  # the same credentials were just refused
        self._auth_header[scope_key] = value
        return True

    def _send_raw(self, method: str, url: str, *, what: str, retry: bool = True, **kwargs: Any) -> Any:
        import requests

        kwargs.setdefault("timeout", self.timeout)
        attempt = 0
        retries = self.retries if retry else 0
        while True:
            body = kwargs.get("data")
            if hasattr(body, "seek"):
                body.seek(0)
            self.stats.requests += 1
            try:
                resp = self.session.request(method, self._url(url), **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt >= retries:
                    raise RegistryNetworkError(
                        f"registry {self.registry} unreachable during {what}: {type(exc).__name__}: {exc}",
                        hint=_NETWORK_HINT,
                    ) from None
                self._sleep(self.backoff * 2 ** attempt)
                attempt += 1
                continue
            if resp.status_code in _RETRY_STATUS and attempt < retries:
                delay = self.backoff * 2 ** attempt
                retry_after = resp.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    delay = max(delay, min(float(retry_after), 60.0))
                resp.close()
                self._sleep(delay)
                attempt += 1
                continue
            return resp

    def request(self, method: str, path: str, *, what: str, scope: str = "", ok: tuple[int, ...] = (200,),
                **kwargs: Any) -> Any:
        """Send with auth (answering one challenge) and retries; raise RegistryError unless status in ``ok``."""
        headers = dict(kwargs.pop("headers", {}) or {})
        self._renew_if_expired(scope)
        # Up to two challenges: the first gets a token (or basic credentials), the second a fresh token
        # when the registry refused the one we held (expired or revoked before its expires_in).
        for _ in range(3):
            auth = self._auth_header.get(scope)
            if auth:
                headers["Authorization"] = auth
            resp = self._send_raw(method, path, headers=headers, what=what, **kwargs)
            if resp.status_code == 401 and self._authorize(resp, scope):
                resp.close()
                continue
            break
        if resp.status_code in ok:
            return resp
        self._raise(resp, what)

    def _renew_if_expired(self, scope: str) -> None:
        """Fetch a new bearer token before a request when the one for ``scope`` reached its ``expires_in``."""
        params = self._challenge.get(scope)
        if not params or not self._auth_header.get(scope, "").startswith("Bearer "):
            return
        key = (params.get("realm", ""), params.get("service", ""), params.get("scope", scope))
        cached = self._tokens.get(key)
        if cached is None or self._clock() >= cached[1]:
            self._auth_header[scope] = f"Bearer {self._fetch_token(params, scope, fresh=True)}"

    def _raise(self, resp: Any, what: str) -> None:
        text, codes = _error_text(resp)
        status = resp.status_code
        msg = f"registry {self.registry}: {what} failed with HTTP {status}: {text}"
        if status in (401, 403):
            raise RegistryAuthError(msg, hint=self._credentials_hint(), status=status, codes=codes)
        if status == 404 or any(c in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN") for c in codes):
            raise RegistryNotFoundError(msg, hint="check the repository name, tag and digest", status=status, codes=codes)
        if status == 405:
            raise RegistryError(msg, hint="the registry does not allow this operation (read-only or deletes disabled)",
                                status=status, codes=codes)
        raise RegistryError(msg, hint="see the registry's logs for details", status=status, codes=codes)

    @staticmethod
    def _scope(repository: str, actions: str = "pull") -> str:
        return f"repository:{repository}:{actions}"

    # --------------------------------------------------------------- reads
    def ping(self) -> None:
        """Check the API answers (authenticating if asked)."""
        self.request("GET", "/v2/", what="API check", scope="")

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest) of a manifest or index; the digest is verified for digest refs."""
        resp = self.request("GET", f"/v2/{repository}/manifests/{reference}", what=f"manifest {repository}:{reference}",
                            scope=self._scope(repository), headers={"Accept": ", ".join(MANIFEST_ACCEPT)})
        data = resp.content
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"registry {self.registry} returned a manifest for {repository}@{reference} "
                                f"that hashes to {digest}", hint="the registry or a proxy is corrupting data")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            media_type = json.loads(data).get("mediaType") or media_type
        except (ValueError, AttributeError):
            pass
        return data, media_type, digest

    def manifest_exists(self, repository: str, reference: str) -> str | None:
        """The digest of ``reference`` if it exists, else None."""
        resp = self.request("HEAD", f"/v2/{repository}/manifests/{reference}", what="manifest check",
                            scope=self._scope(repository), ok=(200, 404), headers={"Accept": ", ".join(MANIFEST_ACCEPT)})
        if resp.status_code == 404:
            return None
        return resp.headers.get("Docker-Content-Digest") or reference

    def blob_exists(self, repository: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", what=f"blob check {digest[:19]}",
                            scope=self._scope(repository), ok=(200, 404))
        return resp.status_code == 200

    def iter_blob(self, repository: str, digest: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Stream a blob (following the registry's redirect to storage); the caller verifies the digest."""
        resp = self.request("GET", f"/v2/{repository}/blobs/{digest}", what=f"download {digest[:19]}",
                            scope=self._scope(repository), stream=True)
        try:
            yield from resp.iter_content(chunk)
        finally:
            resp.close()

    def get_blob(self, repository: str, digest: str) -> bytes:
        data = b"".join(self.iter_blob(repository, digest))
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RegistryError(f"blob {digest} from {self.registry}/{repository} does not match its digest",
                                hint="the registry or a proxy is corrupting data")
        return data

    def list_tags(self, repository: str) -> list[str]:
        resp = self.request("GET", f"/v2/{repository}/tags/list", what="tag list", scope=self._scope(repository))
        return list(resp.json().get("tags") or [])

    # -------------------------------------------------------------- writes
    def _upload_location(self, resp: Any, repository: str) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry} started an upload to {repository} without a Location",
                                hint="the registry does not follow the distribution API")
        return location if location.startswith("http") else self.base_url + location

    @staticmethod
    def _with_query(url: str, **params: str) -> str:
        from urllib.parse import urlencode

        return url + ("&" if "?" in url else "?") + urlencode(params)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> str | None:
        """Cross-repository mount. None when mounted (201), else the upload location the registry opened (202)."""
        scope = f"{self._scope(repository, 'pull,push')} {self._scope(from_repository)}"
        resp = self.request("POST", f"/v2/{repository}/blobs/uploads/", what=f"mount {digest[:19]} from {from_repository}",
                            scope=scope, ok=(201, 202), params={"mount": digest, "from": from_repository})
        if resp.status_code == 201:
            self.stats.mounted.append(digest)
            return None
        return self._upload_location(resp, repository)

    def start_upload(self, repository: str) -> str:
        resp = self.request("POST", f"/v2/{repository}/blobs/uploads/", what="upload start",
                            scope=self._scope(repository, "pull,push"), ok=(202,))
        return self._upload_location(resp, repository)

    # ------------------------------------------------ upload sessions that survive failures
    def upload_status(self, repository: str, location: str) -> tuple[str, int] | None:
        """(location, next offset) of a live upload session from the registry's ``Range``; None when it is gone."""
        try:
            resp = self.request("GET", location, what="upload status", scope=self._scope(repository, "pull,push"),
                                ok=(204, 404), retry=False)
        except (RegistryError, RegistryNetworkError):
            return None
        if resp.status_code == 404:
            return None
        match = re.match(r"^(?:bytes=)?0-(\d+)$", resp.headers.get("Range", "").strip())
        end = int(match.group(1)) if match else 0
        # "0-0" is what an empty session reports (our chunks are never a single byte).
        return self._upload_location(resp, repository) if resp.headers.get("Location") else location, \
            (end + 1 if end > 0 else 0)

    def cancel_upload(self, repository: str, location: str) -> None:
        """Cancel an abandoned upload session (``DELETE``), so the registry does not keep its partial data."""
        try:
            resp = self.request("DELETE", location, what="upload cancel", scope=self._scope(repository, "pull,push"),
                                ok=(202, 204, 404), retry=False)
            if resp.status_code != 404:
                self.stats.cancelled += 1
            # 404: gone already, or (CNCF distribution) a session cut mid-body whose state token no longer
            # matches its bytes; the registry's upload purging removes those.
        except (RegistryError, RegistryNetworkError):
            pass  # best effort: the registry's upload purging removes it eventually

    def _state_path(self, kind: str, repository: str, digest: str) -> Path | None:
        if self.state_dir is None:
            return None
        return self.state_dir / kind / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', repository)}-{digest.split(':', 1)[-1]}"

    def _write_state(self, path: Path | None, data: dict[str, Any]) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def _session_request(self, method: str, url: str, *, what: str, scope: str, ok: tuple[int, ...],
                         **kwargs: Any) -> Any:
        """One request inside an upload session, never retried into the same session."""
        try:
            return self.request(method, url, what=what, scope=scope, ok=ok, retry=False, **kwargs)
        except RegistryNetworkError as exc:
            raise _SessionBroken(exc.message) from exc
        except RegistryError as exc:
            if exc.status in (404, 408, 416, 429) or (exc.status or 0) >= 500:
                raise _SessionBroken(str(exc), exc.status) from exc
            raise

    def upload_blob(self, repository: str, digest: str, opener: Callable[[], IO[bytes]], size: int, *,
                    location: str | None = None, chunked: bool | None = None,
                    on_bytes: Callable[[int], None] | None = None) -> None:
        """Upload a blob: one PUT if it fits in ``chunk_size`` (or ``chunked=False``), else PATCH chunks then PUT.

        A failed session is resumed from the registry's ``Range`` when it is still alive, else
        cancelled and replaced by a fresh one; a session a killed push left behind is resumed too.
        """
        scope = self._scope(repository, "pull,push")
        what = f"upload {digest[:19]} to {repository}"
        if chunked is None:
            chunked = size > self.chunk_size
        state = self._state_path("uploads", repository, digest)
        offset = 0
        if location is None and state is not None and state.is_file():
            try:
                recorded = json.loads(state.read_text())["location"]
            except (OSError, ValueError, KeyError):
                recorded = None
            if recorded:
                alive = self.upload_status(repository, recorded)
                if alive and alive[1] <= size:
                    location, offset = alive
                    chunked = chunked or offset > 0
                    self.stats.resumes += 1
                else:
                    self.cancel_upload(repository, recorded)
        failures = 0
        last: _SessionBroken | None = None
        while True:
            try:
                if location is None:
                    location, offset = self.start_upload(repository), 0
                self._write_state(state, {"location": location, "digest": digest})
                if chunked or offset:
                    with opener() as f:
                        f.seek(offset)
                        while offset < size:
                            chunk = f.read(min(self.chunk_size, size - offset))
                            if not chunk:
                                break
                            end = offset + len(chunk) - 1
                            resp = self._session_request(
                                "PATCH", location, what=what, scope=scope, ok=(202,), data=chunk,
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk))})
                            location = self._upload_location(resp, repository)
                            self._write_state(state, {"location": location, "digest": digest})
                            offset = end + 1
                            failures = 0  # progress: the failure budget is per stretch without progress
                            if on_bytes:
                                on_bytes(len(chunk))
                    if offset != size:
                        raise RegistryError(f"{what}: read {offset} bytes, expected {size}",
                                            hint="the file changed during the upload; build again")
                    resp = self._session_request("PUT", self._with_query(location, digest=digest), what=what,
                                                 scope=scope, ok=(201, 204), data=b"", headers={"Content-Length": "0"})
                else:
                    with opener() as f:
                        resp = self._session_request(
                            "PUT", self._with_query(location, digest=digest), what=what, scope=scope, ok=(201, 204),
                            data=f, headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
                    if on_bytes:
                        on_bytes(size)
                break
            except _SessionBroken as exc:
                last = exc
                failures += 1
                if failures > max(1, self.retries):
                    if location:
                        self.cancel_upload(repository, location)
                    if state is not None:
                        state.unlink(missing_ok=True)
                    cause = exc.__cause__
                    if isinstance(cause, MlopsError):
                        raise cause
                    raise RegistryNetworkError(f"{what} failed: {exc}", hint=_NETWORK_HINT) from None
                self._sleep(self.backoff * 2 ** (failures - 1))
                alive = self.upload_status(repository, location) if location else None
                if alive and failures == 1 and alive[1] <= size:
                    # The session survived: go on from where the registry has the bytes.
                    location, offset = alive
                    chunked = chunked or offset > 0
                    self.stats.resumes += 1
                else:
                    # The session is gone (or did not survive a resume): cancel it, start over.
                    if location:
                        self.cancel_upload(repository, location)
                    location, offset = None, 0
                    self.stats.restarts += 1
        del last
        if state is not None:
            state.unlink(missing_ok=True)
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise RegistryError(f"{what}: the registry stored {got}", hint="the bytes changed during the upload")
        self.stats.uploaded.append(digest)
        self.stats.bytes_uploaded += size

    def _known_repository(self, repository: str, digest: str) -> str | None:
        """Another repository of this registry that this machine pushed ``digest`` to (a mount source)."""
        path = self._state_path("blobs", "", digest)
        try:
            other = path.read_text().strip() if path else ""
        except OSError:
            return None
        return other if other and other != repository else None

    def _remember_blob(self, repository: str, digest: str) -> None:
        path = self._state_path("blobs", "", digest)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(repository)
            os.replace(tmp, path)

    def push_blob(self, repository: str, digest: str, opener: Callable[[], IO[bytes]] | None, size: int, *,
                  mount_from: str | None = None, on_bytes: Callable[[int], None] | None = None) -> str:
        """Make sure the blob is in ``repository``: 'existing', 'mounted' or 'uploaded'."""
        if self.blob_exists(repository, digest):
            self.stats.existing.append(digest)
            self._remember_blob(repository, digest)
            if on_bytes:
                on_bytes(size)
            return "existing"
        location = None
        sources = [r for r in (mount_from, self._known_repository(repository, digest)) if r and r != repository]
        for source in dict.fromkeys(sources):
            try:
                location = self.mount_blob(repository, digest, source)
            except RegistryAuthError:
                continue  # no pull right on the source: upload instead
            if location is None:
                self._remember_blob(repository, digest)
                if on_bytes:
                    on_bytes(size)
                return "mounted"
            break
        if opener is None:
            if location:
                self.cancel_upload(repository, location)
            raise RegistryError(f"blob {digest} is neither in {repository} nor mountable, and no local copy exists",
                                hint="build again so the builder fetches the base image's layers")
        self.upload_blob(repository, digest, opener, size, location=location, on_bytes=on_bytes)
        self._remember_blob(repository, digest)
        return "uploaded"

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.request("PUT", f"/v2/{repository}/manifests/{reference}", what=f"manifest put {repository}:{reference}",
                     scope=self._scope(repository, "pull,push"), ok=(201, 202, 204), data=data,
                     headers={"Content-Type": media_type})
        return digest

    def close(self) -> None:
        self.session.close()


def client_for(ref: ImageReference, *, username: str | None = None, password: str | None = None,
               plain_http: bool | None = None, **kwargs: Any) -> RegistryClient:
    """A client for the registry of ``ref`` (credentials from arguments or the Docker config)."""
    if (username is None) != (password is None) and username is not None and password is None:
        raise ConfigError(f"a username is set for {ref.registry} but no password", hint="set both or neither")
    return RegistryClient(ref.registry, username=username, password=password, plain_http=plain_http, **kwargs)
