"""Meta, Google Ads, TikTok and LinkedIn as the tests play them: one real HTTP server on 127.0.0.1 that checks every
request as the platforms document it (``specs/ad-platforms.md``: fields, hashing, batch limits, tokens, time
windows) and answers as they do, including what a test asks for: 429, 5xx, expired tokens, a refused event.

Like the platforms, it deduplicates: Meta by ``event_name`` + ``event_id``, Google by ``orderId`` (a second upload
of one answers ``CLICK_CONVERSION_ALREADY_EXISTS``), TikTok by ``event`` + ``event_id``, LinkedIn by
``conversion`` + ``eventId``. ``received`` counts every
copy that arrived (``arrivals`` says when); ``accepted`` holds each event once; ``duplicates_for`` counts the
conversions the platform counted more than once, by event id (a copy its deduplication could not match).
Google's conversion adjustments (``:uploadConversionAdjustments``) retract only a conversion it accepted before,
as Google does: ``retractions`` holds each retraction once, ``adjustments_received`` every copy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeAdPlatforms", "Scripted"]

HEX64 = re.compile(r"[0-9a-f]{64}")
FBC = re.compile(r"fb\.[0-2]\.[0-9]{13}\.[^\s.]+(\.[A-Za-z0-9_-]+)?")
FBP = re.compile(r"fb\.[0-2]\.[0-9]{13}\.[0-9]+")
GOOGLE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}")
ACTION_SOURCES = {"website", "email", "app", "phone_call", "chat", "physical_store", "system_generated", "other"}
META_HASHED = ("em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country", "external_id")
LINKEDIN_ID_TYPES = {"SHA256_EMAIL", "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "AXCIOM_ID", "ORACLE_MOAT_ID"}


@dataclass
class Scripted:
    """An answer a test asks for, given to the next ``times`` requests of that destination."""

    status: int
    body: dict[str, Any]
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)


def _google_moment(value: str) -> float:
    """Unix seconds of Google's "yyyy-mm-dd hh:mm:ss+|-hh:mm"."""
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S%z").timestamp()


class _Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(json.dumps(body))
        self.status = status
        self.body = body


def _meta_error(message: str, code: int = 100, status: int = 400, subcode: int | None = 2804003) -> _Refused:
    """Meta's error body; an event's bad parameter carries a subcode, a malformed request none."""
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": secrets.token_hex(8)}
    return _Refused(status, {"error": error | ({"error_subcode": subcode} if subcode is not None else {})})


class FakeAdPlatforms:
    """``/meta/{pixel}/events``, ``/google/token``, ``/google/customers/{id}:uploadClickConversions``,
    ``/google/customers/{id}:uploadConversionAdjustments`` (scripted answers under the destination
    ``google:{id}:adjustments``), ``/tiktok/event/track/``."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.meta_tokens: dict[str, str] = {}
        self.google_refresh: dict[str, str] = {}
        """refresh token → customer id it may upload to."""
        self.google_access: dict[str, str] = {}
        self.tiktok_tokens: dict[str, str] = {}
        self.linkedin_tokens: dict[str, str] = {}
        """LinkedIn access token → the ad account it reaches (the destination ``linkedin:{account}``)."""
        self.scripted: dict[str, list[Scripted]] = {}
        self.refused_ids: set[str] = set()
        """Event ids (Meta event_id, Google orderId) the platform refuses as invalid."""
        self.received: Counter[str] = Counter()
        self.arrivals: dict[str, list[float]] = {}
        """Dedup key → when each copy arrived (Unix seconds)."""
        self.accepted: dict[str, dict[str, Any]] = {}
        self.counted: Counter[tuple[str, str]] = Counter()
        """(destination, event id) → how many times the platform counted it as a conversion."""
        self.requests: Counter[str] = Counter()
        self.batch_sizes: dict[str, list[int]] = {}
        self.request_sizes: dict[str, list[int]] = {}
        """Destination → how many events each request carried, scripted answers included."""
        self.hold: dict[str, threading.Event] = {}
        """Destination → released: a request there is recorded, then waits (a worker killed mid-batch)."""
        self.holding = threading.Event()
        self.bodies: list[bytes] = []
        self.client_id, self.client_secret = "trailmark-test.apps.example", "test-client-secret"
        """The OAuth client conftest gives the API and workers."""
        self.codes: dict[str, dict[str, str]] = {}
        self.grant_customer = ""
        """The Google Ads account the next consent grants access to."""
        self.flaky_every = 0
        """With N > 0, every Nth request of a destination answers 429 or 503 before anything is recorded."""
        self.retractions: dict[str, dict[str, Any]] = {}
        """Order id → the RETRACTION adjustment Google applied to the conversion it names."""
        self.adjustments_received: Counter[str] = Counter()
        """Order id (or gclid) → every adjustment that arrived for it, refused ones and repeats included."""
        self.test_events: list[dict[str, Any]] = []
        """Meta's events sent with a test_event_code, Google's validateOnly conversions that passed."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                """Google's consent page, as a person who clicks Allow meets it: straight back with a code."""
                location = fake._authorize(self.path)
                self.send_response(302 if location.startswith("http") else 400)
                self.send_header("Location" if location.startswith("http") else "X-Refused", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                with fake.lock:
                    fake.bodies.append(raw + b" " + str(dict(self.headers)).encode())
                try:
                    status, body, headers = fake._route(self.path, dict(self.headers.items()), raw)
                except _Refused as refused:
                    status, body, headers = refused.status, refused.body, {}
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the sender died waiting

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        for event in self.hold.values():
            event.set()
        self.server.shutdown()
        self.server.server_close()

    # --- what tests arrange -------------------------------------------------------------------

    def script(self, destination: str, answer: Scripted) -> None:
        with self.lock:
            self.scripted.setdefault(destination, []).append(answer)

    def accepted_for(self, destination: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {k: v for k, v in self.accepted.items() if v["_destination"] == destination}

    def duplicates_for(self, destination: str) -> int:
        """Conversions counted more than once at ``destination``, by event id (0 when deduplication held)."""
        with self.lock:
            return sum(n - 1 for (where, _), n in self.counted.items() if where == destination and n > 1)

    def received_for(self, destination: str) -> Counter[str]:
        with self.lock:
            ids = {k for k, v in self.accepted.items() if v["_destination"] == destination}
            return Counter({k: n for k, n in self.received.items() if k in ids})

    # --- routing ------------------------------------------------------------------------------

    def _route(  # noqa: PLR0911 - one answer per endpoint
        self, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        parts = urlsplit(path)
        if parts.path == "/google/token":
            form = parse_qs(raw.decode())
            if (form.get("grant_type") or [""])[0] == "authorization_code":
                return self._google_code(form, headers)
            return self._google_token(form)
        body = json.loads(raw or b"{}")
        if match := re.fullmatch(r"/meta/([0-9]+)/events", parts.path):
            destination = f"meta:{match.group(1)}"
            return self._scripted(destination, body) or self._meta(destination, match.group(1), body, parts.query)
        if match := re.fullmatch(r"/google/customers/([0-9]{10}):(uploadClickConversions|uploadConversionAdjustments)",
                                 parts.path):  # fmt: skip
            customer, uploads = match.group(1), match.group(2) == "uploadClickConversions"
            destination = f"google:{customer}" if uploads else f"google:{customer}:adjustments"
            handler = self._google if uploads else self._google_adjustments
            return self._scripted(destination, body) or handler(destination, customer, body, headers)
        if parts.path == "/linkedin/conversionEvents":
            return self._linkedin_route(body, {k.lower(): v for k, v in headers.items()})
        if parts.path == "/tiktok/event/track/":
            destination = f"tiktok:{body.get('event_source_id')}"
            return self._scripted(destination, body) or self._tiktok(destination, body, headers)
        return 404, {"error": "no such endpoint"}, {}

    def _scripted(self, destination: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        items = body.get("data", body.get("conversions", body.get("conversionAdjustments")))
        with self.lock:
            self.requests[destination] += 1
            self.request_sizes.setdefault(destination, []).append(len(items) if isinstance(items, list) else 0)
            if self.flaky_every and self.requests[destination] % self.flaky_every == 0:
                # Every Nth request: a rate limit or an outage, alternately (the benchmark's weather).
                if self.requests[destination] // self.flaky_every % 2:
                    return 429, {"error": {"code": 17, "message": "User request limit reached"}}, {"Retry-After": "1"}
                return 503, {"error": {"code": 2, "status": "UNAVAILABLE", "message": "try again"}}, {}
            queue = self.scripted.get(destination) or []
            if not queue:
                return None
            answer = queue[0]
            answer.times -= 1
            if answer.times <= 0:
                queue.pop(0)
        return answer.status, answer.body, answer.headers

    def _record(self, destination: str, key: str, event: dict[str, Any]) -> bool:
        """True when this event is new here by the platform's deduplication ``key`` (it keeps the first copy)."""
        with self.lock:
            self.received[key] += 1
            self.arrivals.setdefault(key, []).append(time.time())
            if key in self.accepted:
                return False
            self.accepted[key] = {**event, "_destination": destination}
            event_id = event.get("event_id") or event.get("orderId") or event.get("eventId")
            self.counted[(destination, str(event_id))] += 1
            return True

    def _wait_if_held(self, destination: str) -> None:
        gate = self.hold.get(destination)
        if gate is not None and not gate.is_set():
            self.holding.set()
            gate.wait(60)

    # --- Meta ---------------------------------------------------------------------------------

    def _meta(self, destination: str, pixel: str, body: dict[str, Any], query: str) -> tuple[int, dict, dict]:
        if "access_token" in parse_qs(query):
            raise _meta_error("tests expect the token in the body, never in the URL", subcode=None)
        token = body.get("access_token")
        if pixel not in self.meta_tokens or token != self.meta_tokens[pixel]:
            raise _meta_error("Error validating access token: Session has expired", code=190, subcode=463)
        events = body.get("data")
        if not isinstance(events, list) or not 1 <= len(events) <= 1000:
            raise _meta_error("(#100) param data must be an array of 1 to 1,000 events", subcode=None)
        for index, event in enumerate(events):
            self._check_meta_event(index, event)
        if body.get("test_event_code"):  # shown under Test events, never counted
            with self.lock:
                self.test_events.extend(
                    {**e, "_destination": destination, "_code": body["test_event_code"]} for e in events
                )
            return 200, {"events_received": len(events), "messages": [], "fbtrace_id": secrets.token_hex(8)}, {}
        with self.lock:
            self.batch_sizes.setdefault(destination, []).append(len(events))
        for event in events:
            self._record(destination, f"{event['event_name']}:{event['event_id']}", event)
        self._wait_if_held(destination)
        return 200, {"events_received": len(events), "messages": [], "fbtrace_id": secrets.token_hex(8)}, {}

    def _check_meta_event(self, index: int, event: dict[str, Any]) -> None:
        where = f"data[{index}]"
        if event.get("event_id") in self.refused_ids:
            raise _meta_error(f"{where}: invalid parameter")
        if not isinstance(event.get("event_name"), str) or not isinstance(event.get("event_id"), str):
            raise _meta_error(f"{where}: event_name and event_id are required strings")
        event_time = event.get("event_time")
        if not isinstance(event_time, int) or not time.time() - 7 * 86400 <= event_time <= time.time() + 600:
            raise _meta_error(f"{where}: event_time must be Unix seconds within the last 7 days")
        if event.get("action_source") not in ACTION_SOURCES:
            raise _meta_error(f"{where}: unknown action_source")
        user = event.get("user_data")
        if not isinstance(user, dict) or not user:
            raise _meta_error(f"{where}: user_data is required")
        if event["action_source"] == "website" and not (
            event.get("event_source_url") and user.get("client_user_agent")
        ):
            raise _meta_error(f"{where}: website events need event_source_url and user_data.client_user_agent")
        for name in META_HASHED:
            values = user.get(name)
            if values is not None and not (isinstance(values, list) and all(HEX64.fullmatch(v) for v in values)):
                raise _meta_error(f"{where}: user_data.{name} must be SHA-256 hashes")
        if "fbc" in user and not FBC.fullmatch(user["fbc"]):
            raise _meta_error(f"{where}: fbc must be fb.<index>.<creation ms>.<fbclid>")
        if "fbp" in user and not FBP.fullmatch(user["fbp"]):
            raise _meta_error(f"{where}: fbp must be fb.<index>.<creation ms>.<random>")
        custom = event.get("custom_data") or {}
        if "value" in custom and not re.fullmatch(r"[A-Z]{3}", str(custom.get("currency", ""))):
            raise _meta_error(f"{where}: a value needs a 3-letter currency")

    # --- Google Ads ---------------------------------------------------------------------------

    def _authorize(self, path: str) -> str:
        """The redirect back to the client with a code, or why the request is refused."""
        parts = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        expected = {"response_type": "code", "client_id": self.client_id, "code_challenge_method": "S256",
                    "access_type": "offline"}  # fmt: skip
        if parts.path != "/google/authorize" or any(query.get(k) != v for k, v in expected.items()):
            return f"refused: {query}"
        if "https://www.googleapis.com/auth/adwords" not in query.get("scope", "").split():
            return "refused: no adwords scope"
        if not re.fullmatch(r"[A-Za-z0-9_-]{43}", query.get("code_challenge", "")) or not query.get("state"):
            return "refused: no S256 code challenge or state"
        code = secrets.token_urlsafe(16)
        with self.lock:
            self.codes[code] = {"challenge": query["code_challenge"], "redirect_uri": query["redirect_uri"]}
        separator = "&" if "?" in query["redirect_uri"] else "?"
        return f"{query['redirect_uri']}{separator}code={code}&state={query['state']}"

    def _google_code(self, form: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, dict[str, Any], dict]:
        """The authorization-code grant with PKCE: the verifier must hash to the challenge of the code."""
        value = {k: v[0] for k, v in form.items()}
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        basic = base64.b64decode(auth.removeprefix("Basic ")).decode() if auth.startswith("Basic ") else ""
        client = basic or f"{value.get('client_id')}:{value.get('client_secret')}"
        with self.lock:
            pending = self.codes.pop(value.get("code", ""), None)
        verifier = value.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if (
            pending is None
            or client != f"{self.client_id}:{self.client_secret}"
            or pending["redirect_uri"] != value.get("redirect_uri")
            or pending["challenge"] != challenge
        ):
            return 400, {"error": "invalid_grant", "error_description": "Bad code, verifier or client."}, {}
        refresh, access = "1//granted-" + secrets.token_urlsafe(16), "ya29." + secrets.token_urlsafe(24)
        with self.lock:
            self.google_refresh[refresh] = self.grant_customer
            self.google_access[access] = self.grant_customer
        return 200, {"access_token": access, "refresh_token": refresh, "expires_in": 3599, "token_type": "Bearer",
                     "scope": "https://www.googleapis.com/auth/adwords"}, {}  # fmt: skip

    def _google_token(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any], dict[str, str]]:
        refresh = (form.get("refresh_token") or [""])[0]
        if (form.get("grant_type") or [""])[0] != "refresh_token" or refresh not in self.google_refresh:
            return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, {}
        access = "ya29." + secrets.token_urlsafe(24)
        with self.lock:
            self.google_access[access] = self.google_refresh[refresh]
        return 200, {"access_token": access, "expires_in": 3599, "token_type": "Bearer", "scope": "adwords"}, {}

    def _google_unauthenticated(self, customer: str, headers: dict[str, str]) -> Any:
        """Google's 401 unless the Bearer token is an access token granted for this customer, else None."""
        bearer = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if self.google_access.get(bearer.removeprefix("Bearer ")) != customer:
            return (
                401,
                {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "Request had invalid credentials"}},
                {},
            )
        return None

    def _google(self, destination: str, customer: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        if refused := self._google_unauthenticated(customer, headers):
            return refused
        clicks = body.get("conversions")
        if body.get("partialFailure") is not True or not isinstance(clicks, list) or not 1 <= len(clicks) <= 2000:
            return (
                400,
                {
                    "error": {
                        "code": 400,
                        "status": "INVALID_ARGUMENT",
                        "message": "1-2,000 conversions, partialFailure",
                    }
                },
                {},
            )
        errors = []
        for index, click in enumerate(clicks):
            problem = self._google_problem(customer, click)
            if problem is None and body.get("validateOnly") is True:  # checked, never stored
                with self.lock:
                    self.test_events.append({**click, "_destination": destination})
                continue
            if problem is None and self._record(destination, str(click["orderId"]), click):
                continue
            code = problem or "CLICK_CONVERSION_ALREADY_EXISTS"
            errors.append({
                "errorCode": {"conversionUploadError": code},
                "message": code.replace("_", " ").lower(),
                "location": {"fieldPathElements": [{"fieldName": "conversions", "index": index}]},
            })  # fmt: skip
        with self.lock:
            self.batch_sizes.setdefault(destination, []).append(len(clicks))
        self._wait_if_held(destination)
        answer: dict[str, Any] = {"results": [{} for _ in clicks]}
        if errors:
            answer["partialFailureError"] = {
                "code": 3,
                "message": "partial failure",
                "details": [{"@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure",
                             "errors": errors}],
            }  # fmt: skip
        return 200, answer, {}

    def _google_problem(self, customer: str, click: dict[str, Any]) -> str | None:
        """The error code Google would answer for this click conversion, or None."""
        identifiers = click.get("userIdentifiers") or []
        checks = [
            (bool(re.fullmatch(rf"customers/{customer}/conversionActions/[0-9]+", str(click.get("conversionAction")))),
             "INVALID_CONVERSION_ACTION"),
            (sum(1 for k in ("gclid", "gbraid", "wbraid") if click.get(k)) == 1, "CLICK_ID_REQUIRED_EXACTLY_ONE"),
            (bool(GOOGLE_TIME.fullmatch(str(click.get("conversionDateTime")))), "INVALID_CONVERSION_DATE_TIME"),
            (bool(click.get("orderId")) and click.get("orderId") not in self.refused_ids, "UNPARSEABLE_GCLID"),
            ((click.get("consent") or {}).get("adUserData") in ("GRANTED", "DENIED", "UNSPECIFIED"), "INVALID_CONSENT"),
            (len(identifiers) <= 5 and all(
                len(i) == 1 and HEX64.fullmatch(str(i.get("hashedEmail") or i.get("hashedPhoneNumber")))
                for i in identifiers
            ), "INVALID_USER_IDENTIFIER"),
        ]  # fmt: skip
        return next((code for ok, code in checks if not ok), None)

    def _google_adjustments(
        self, destination: str, customer: str, body: dict[str, Any], headers: dict[str, str]
    ) -> Any:
        """ConversionAdjustmentUploadService: partialFailure is required; each RETRACTION is checked against the
        conversion it names (by order id, or by gclid and conversion time for one uploaded without an order
        id), and the errors come back per adjustment, by its index in ``conversion_adjustments``."""
        if refused := self._google_unauthenticated(customer, headers):
            return refused
        adjustments = body.get("conversionAdjustments")
        if body.get("partialFailure") is not True or not isinstance(adjustments, list) or not adjustments:
            message = "conversionAdjustments and partialFailure: true are required"
            return 400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": message}}, {}
        if len(adjustments) > 2000:
            return 400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                   "message": "TOO_MANY_ADJUSTMENTS_IN_REQUEST"}}, {}  # fmt: skip
        errors = []
        for index, adjustment in enumerate(adjustments):
            key = str(adjustment.get("orderId") or (adjustment.get("gclidDateTimePair") or {}).get("gclid"))
            with self.lock:
                self.adjustments_received[key] += 1
            problem = self._google_adjustment_problem(customer, adjustment)
            if problem is None and body.get("validateOnly") is not True:
                with self.lock:
                    self.retractions[key] = {**adjustment, "_destination": destination}
                continue
            if problem is not None:
                category, code = problem
                errors.append({
                    "errorCode": {category: code},
                    "message": code.replace("_", " ").lower(),
                    "location": {"fieldPathElements": [{"fieldName": "conversion_adjustments", "index": index}]},
                })  # fmt: skip
        answer: dict[str, Any] = {"results": [{} for _ in adjustments]}
        if errors:
            answer["partialFailureError"] = {
                "code": 3,
                "message": "partial failure",
                "details": [{"@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure",
                             "errors": errors}],
            }  # fmt: skip
        return 200, answer, {}

    def _google_adjustment_problem(  # noqa: PLR0911, PLR0912 - one answer per documented error
        self, customer: str, adjustment: dict[str, Any]
    ) -> tuple[str, str] | None:
        """(error category, code) as Google would answer this adjustment, or None when it applies."""
        error = "conversionAdjustmentUploadError"
        action = str(adjustment.get("conversionAction"))
        if not re.fullmatch(r"customers/[0-9]{10}/conversionActions/[0-9]+", action):
            return "requestError", "INVALID_RESOURCE_NAME"
        if adjustment.get("adjustmentType") not in ("RETRACTION", "RESTATEMENT", "ENHANCEMENT"):
            return "fieldError", "REQUIRED"
        if adjustment.get("adjustmentType") != "RETRACTION":
            return "fieldError", "UNSUPPORTED_BY_THIS_FAKE"  # Trailmark only ever retracts
        adjusted = str(adjustment.get("adjustmentDateTime"))
        if not GOOGLE_TIME.fullmatch(adjusted):
            return "dateError", "INVALID_FIELD_VALUES_IN_DATE_TIME"
        pair = adjustment.get("gclidDateTimePair")
        order_id = adjustment.get("orderId")
        if pair and order_id:
            return error, "GCLID_DATE_TIME_PAIR_AND_ORDER_ID_BOTH_SET"
        with self.lock:
            if order_id:
                uploaded = self.accepted.get(str(order_id))
            elif isinstance(pair, dict) and GOOGLE_TIME.fullmatch(str(pair.get("conversionDateTime"))):
                uploaded = next((c for c in self.accepted.values() if c.get("gclid") == pair.get("gclid")
                                 and c.get("conversionDateTime") == pair["conversionDateTime"]
                                 and not c.get("orderId")), None)  # fmt: skip
            else:
                return "fieldError", "REQUIRED"
            retracted = str(order_id or pair.get("gclid")) in self.retractions
        # Validation ignores the customer id in the resource name: the action id alone names the action.
        if (
            uploaded is None
            or uploaded["_destination"] != f"google:{customer}"
            or (str(uploaded.get("conversionAction")).rsplit("/", 1)[-1] != action.rsplit("/", 1)[-1])
        ):
            return error, "CONVERSION_NOT_FOUND"
        if retracted:
            return error, "CONVERSION_ALREADY_RETRACTED"
        converted = _google_moment(str(uploaded["conversionDateTime"]))
        if _google_moment(adjusted) <= converted:
            return error, "ADJUSTMENT_PRECEDES_CONVERSION"
        if time.time() - converted > 54 * 86400:
            return error, "CONVERSION_EXPIRED"
        if time.time() - converted < 86400:
            return error, "TOO_RECENT_CONVERSION"
        return None

    # --- TikTok -------------------------------------------------------------------------------

    def _tiktok(self, destination: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        token = {k.lower(): v for k, v in headers.items()}.get("access-token")
        if self.tiktok_tokens.get(str(body.get("event_source_id"))) != token:
            return 200, {"code": 40105, "message": "Access token is invalid"}, {}
        events = body.get("data")
        if body.get("event_source") != "web" or not isinstance(events, list) or not 1 <= len(events) <= 1000:
            return 200, {"code": 40002, "message": "event_source web and 1-1,000 events"}, {}
        for event in events:
            if not event.get("event") or not event.get("event_id") or not isinstance(event.get("event_time"), int):
                return 200, {"code": 40002, "message": "event, event_id and event_time are required"}, {}
        for event in events:
            self._record(destination, f"{event['event']}:{event['event_id']}", event)
        return 200, {"code": 0, "message": "OK", "data": {}}, {}

    # --- LinkedIn -----------------------------------------------------------------------------

    def _linkedin_route(self, body: dict[str, Any], headers: dict[str, str]) -> Any:
        account = self.linkedin_tokens.get(headers.get("authorization", "").removeprefix("Bearer "))
        if account is None:
            return 401, {"status": 401, "serviceErrorCode": 65600, "message": "Invalid access token"}, {}
        destination = f"linkedin:{account}"
        return self._scripted(destination, {"data": body.get("elements")}) or self._linkedin(destination, body, headers)

    def _linkedin(self, destination: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """Conversions API, Rest.li ``BATCH_CREATE``: the versioned headers, then each element checked alone and
        answered with its own status (201, or 400 with why), in order."""
        if not re.fullmatch(r"20[0-9]{4}", headers.get("linkedin-version", "")):
            return 400, {"status": 400, "message": "A valid LinkedIn-Version header (YYYYMM) is required"}, {}
        if headers.get("x-restli-protocol-version") != "2.0.0" or headers.get("x-restli-method") != "BATCH_CREATE":
            return 400, {"status": 400, "message": "X-Restli-Protocol-Version 2.0.0 and BATCH_CREATE expected"}, {}
        elements = body.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 1000:
            return 400, {"status": 400, "message": "elements: 1 to 1,000 conversion events"}, {}
        answers = []
        for element in elements:
            problem = self._linkedin_problem(element)
            if problem is None:
                self._record(destination, f"{element['conversion']}:{element['eventId']}", element)
                answers.append({"status": 201})
            else:
                answers.append({"status": 400, "error": {"status": 400, "message": problem}})
        with self.lock:
            self.batch_sizes.setdefault(destination, []).append(len(elements))
        return 200, {"elements": answers}, {}

    def _linkedin_problem(self, element: dict[str, Any]) -> str | None:
        """Why LinkedIn would refuse this conversion event, or None."""
        happened = element.get("conversionHappenedAt")
        user_ids = (element.get("user") or {}).get("userIds")
        value = element.get("conversionValue")
        checks = [
            (bool(re.fullmatch(r"urn:lla:llaPartnerConversion:[0-9]+", str(element.get("conversion")))),
             "conversion must be a conversion rule URN"),
            (isinstance(happened, int) and time.time() * 1000 - 90 * 86400_000 <= happened <= time.time() * 1000
             + 600_000, "conversionHappenedAt: epoch milliseconds within the last 90 days"),
            (isinstance(element.get("eventId"), str) and bool(element["eventId"]), "eventId is required"),
            (isinstance(user_ids, list) and 1 <= len(user_ids) <= 4 and all(
                u.get("idType") in LINKEDIN_ID_TYPES and isinstance(u.get("idValue"), str) and u["idValue"]
                and (u["idType"] != "SHA256_EMAIL" or HEX64.fullmatch(u["idValue"]))
                for u in user_ids
            ), "user.userIds: 1-4 ids of a known idType (SHA256_EMAIL as SHA-256 hex)"),
            (value is None or (re.fullmatch(r"[A-Z]{3}", str(value.get("currencyCode")))
                               and re.fullmatch(r"[0-9]+(\.[0-9]+)?", str(value.get("amount")))),
             "conversionValue: a 3-letter currencyCode and the amount as a decimal string"),
        ]  # fmt: skip
        return next((problem for ok, problem in checks if not ok), None)
