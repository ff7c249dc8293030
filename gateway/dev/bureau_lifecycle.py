"""The simulated bureau's side of the case lifecycle: it moves every case it opened through
acceptance (or return), negotiation, mediation and closure, and tells the gateway.

Written from the interface specs (``docs/cases.md``), independently of ``connectors/``: the
bureau signs its callbacks itself. Per family:

* ``json_hmac`` / ``form_sm3`` **call back**: each event is POSTed, signed with the city's
  shared secret, to the gateway's receiver for the city (``callback_url``); a refused or failed
  callback is sent again (new nonce), up to ``callback_attempts`` times.
* ``soap`` / ``oauth_json`` **are polled**: events are appended to the city's change log
  (sequence numbers as cursors) and served to ``QueryCaseUpdates`` (SOAP, WS-Security checked)
  or ``GET …/case-updates?cursor=`` (OAuth2 bearer checked), under the city's rate limit.

Delays are in bureau seconds and divided by ``time_warp`` (a warp of 3600 turns an hour into a
second). Knobs for tests: ``repeat_ratio`` (a callback is sent twice), ``reorder_ratio`` (two
consecutive events of a case are delivered swapped), ``impossible_ratio`` (after closing, the
bureau reports the case as returned), ``overlap`` (polls answer from a few events
before the cursor, as a bureau with a sloppy cursor would).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from datetime import datetime
from urllib.parse import parse_qsl, urlencode

import httpx

from gateway.dev.bureau_city import Case, CityBureau
from gateway.dev.bureau_protocols import (
    CST,
    SOAP_NS,
    Answer,
    Incoming,
    NonceCache,
    Verdict,
    check_auth,
    parse_xml,
    render,
)

RESULT_PATHS = ("/case-results", "/case-result")
HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class LifecyclePlan:
    time_warp: float = 1.0
    accept_after_s: float = 2 * HOUR
    negotiate_after_s: float = 4 * HOUR
    mediate_after_s: float = 3 * DAY
    close_after_s: float = 5 * DAY
    return_ratio: float = 0.1
    mediate_ratio: float = 0.2
    settle_ratio: float = 0.8
    repeat_ratio: float = 0.0
    reorder_ratio: float = 0.0
    impossible_ratio: float = 0.0
    overlap: int = 0
    callback_attempts: int = 8


@dataclass(slots=True)
class Event:
    seq: int
    key: str
    case_number: str
    status: str
    at_ms: int
    reason: str = ""
    result: str = ""


@dataclass(slots=True)
class _Script:
    case: Case
    steps: list[tuple[float, dict[str, str]]] = field(default_factory=list)


WORDS = ("accepted", "returned", "negotiating", "mediating", "closed")


class BureauLifecycle:
    """Moves one simulated city's cases through their lifecycle (a thread)."""

    def __init__(
        self,
        city: CityBureau,
        client: tuple[str, str],
        plan: LifecyclePlan,
        *,
        callback_url: str | None = None,
        seed: int | None = None,
        verify: bool | str = True,
    ) -> None:
        self.city = city
        self.profile = city.profile
        self.client = client
        self.plan = plan
        self.callback_url = callback_url
        self.polled = self.profile.family in ("soap", "oauth_json")
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._scripts: dict[str, _Script] = {}
        self._log: list[Event] = []
        self._sent: list[Event] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nonces = NonceCache()
        self._http = httpx.Client(timeout=10.0, verify=verify)
        self.callback_answers: dict[str, int] = {}
        self.results: dict[str, dict[str, str]] = {}
        """Handling results the bureau accepted, by idempotency key."""
        self.result_submissions = 0
        city.inbound = self.answer
        city.lifecycle = self

    # --- observations ----------------------------------------------------------------------
    def events(self) -> list[Event]:
        """Every event the bureau emitted (callback or change log), in order."""
        with self._lock:
            return list(self._sent)

    def record(self, key: str, case_number: str, status: str, **extra: str) -> Event:
        """Emit one event now, as the lifecycle would (the conformance kit's probe)."""
        with self._lock:
            event = Event(
                seq=len(self._sent) + 1,
                key=key,
                case_number=case_number,
                status=status,
                at_ms=int(time.time() * 1000),
                reason=extra.get("reason", ""),
                result=extra.get("result", ""),
            )
            self._sent.append(event)
            if self.polled:
                self._log.append(event)
        return event

    def signed_callback(self, event: Event, path: str) -> tuple[bytes, dict[str, str]]:
        """The callback the bureau would send for ``event`` to ``path`` (body, headers)."""
        url, self.callback_url = self.callback_url, f"http://gateway{path}"
        try:
            return self._signed(event)
        finally:
            self.callback_url = url

    def finished(self) -> bool:
        with self._lock:
            return all(not s.steps for s in self._scripts.values())

    # --- the lifecycle ---------------------------------------------------------------------
    def start(self) -> BureauLifecycle:
        self._thread = threading.Thread(
            target=self._run, name=f"lifecycle-{self.city.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._http.close()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._adopt_new_cases()
            for step in self._due(time.time()):
                self._emit(step)

    def _adopt_new_cases(self) -> None:
        for case in self.city.cases():
            if case.key not in self._scripts:
                self._scripts[case.key] = _Script(case, self._plan_steps(case))

    def _plan_steps(self, case: Case) -> list[tuple[float, dict[str, str]]]:
        p, rng, warp = self.plan, self._rng, max(self.plan.time_warp, 1e-9)
        at = case.arrived_at + p.accept_after_s / warp
        if rng.random() < p.return_ratio:
            return [(at, {"status": "returned", "reason": "not_jurisdiction"})]
        steps = [(at, {"status": "accepted"})]
        at += p.negotiate_after_s / warp
        steps.append((at, {"status": "negotiating"}))
        if rng.random() < p.mediate_ratio:
            at += p.mediate_after_s / warp
            steps.append((at, {"status": "mediating"}))
        at += p.close_after_s / warp
        result = "settled" if rng.random() < p.settle_ratio else "not_settled"
        steps.append((at, {"status": "closed", "result": result}))
        if rng.random() < p.impossible_ratio:
            steps.append((at + 0.001, {"status": "returned", "reason": "duplicate"}))
        if len(steps) >= 2 and rng.random() < p.reorder_ratio:
            # deliver the first two events swapped (each keeps its own event time)
            (t0, s0), (t1, s1) = steps[0], steps[1]
            s0, s1 = {**s0, "_at": str(t0)}, {**s1, "_at": str(t1)}
            steps[0], steps[1] = (t0, s1), (t1, s0)
        return steps

    def _due(self, now: float) -> list[tuple[_Script, dict[str, str]]]:
        due = []
        for script in self._scripts.values():
            while script.steps and script.steps[0][0] <= now:
                due.append((script, script.steps.pop(0)[1]))
        return due

    def _emit(self, step: tuple[_Script, dict[str, str]]) -> None:
        script, data = step
        at = float(data.get("_at") or time.time())
        with self._lock:
            event = Event(
                seq=len(self._sent) + 1,
                key=script.case.key,
                case_number=script.case.case_number,
                status=data["status"],
                at_ms=int(at * 1000),
                reason=data.get("reason", ""),
                result=data.get("result", ""),
            )
            self._sent.append(event)
            if self.polled:
                self._log.append(event)
        if not self.polled:
            self._call_back(event)
            if self._rng.random() < self.plan.repeat_ratio:
                self._call_back(event)

    # --- calling back ----------------------------------------------------------------------
    def _call_back(self, event: Event) -> None:
        if not self.callback_url:
            return
        for _ in range(self.plan.callback_attempts):
            try:
                body, headers = self._signed(event)
                response = self._http.post(self.callback_url, content=body, headers=headers)
            except httpx.HTTPError:
                self._count("transport_error")
                time.sleep(0.2)
                continue
            ok = self._answer_ok(response)
            self._count("ok" if ok else str(response.status_code))
            if ok:
                return
            time.sleep(0.2 if response.status_code != 429 else 1.0)

    def _count(self, what: str) -> None:
        with self._lock:
            self.callback_answers[what] = self.callback_answers.get(what, 0) + 1

    def _answer_ok(self, response: httpx.Response) -> bool:
        if response.status_code != 200:
            return False
        if self.profile.family == "json_hmac":
            return bool(response.json().get("code") == "0")
        if self.profile.form_answer == "form":
            return dict(parse_qsl(response.text)).get("result_code") == "SUCCESS"
        return bool(response.json().get("result_code") == "SUCCESS")

    def _signed(self, event: Event) -> tuple[bytes, dict[str, str]]:
        if self.profile.family == "json_hmac":
            return self._signed_json(event)
        return self._signed_form(event)

    def _signed_json(self, event: Event) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(
            {
                "events": [
                    {
                        "idempotency_key": event.key,
                        "case_no": event.case_number,
                        "status": event.status,
                        "time": datetime.fromtimestamp(event.at_ms / 1000, CST).isoformat(),
                        "reason": event.reason,
                        "result": event.result,
                        "event_id": str(event.seq),
                        "remark": "",
                    }
                ]
            }
        ).encode()
        stamp, nonce = str(int(time.time() * 1000)), uuid.uuid4().hex
        path = httpx.URL(self.callback_url or "").path
        digest = hashlib.sha256(body).hexdigest()
        message = f"POST\n{path}\n{stamp}\n{nonce}\n{digest}".encode()
        sig = hmac.new(self.client[1].encode(), message, hashlib.sha256).hexdigest()
        headers = {
            "content-type": "application/json; charset=utf-8",
            "x-client-id": self.client[0],
            "x-timestamp": stamp,
            "x-nonce": nonce,
            "x-signature": sig,
        }
        return body, headers

    def _signed_form(self, event: Event) -> tuple[bytes, dict[str, str]]:
        app, stamp_field, nonce_field, kind = self.profile.form
        now = time.time()
        stamp = str(int(now)) if kind == "s" else str(int(now * 1000))
        local = datetime.fromtimestamp(event.at_ms / 1000, CST).strftime("%Y-%m-%d %H:%M:%S")
        params = {
            "out_id": event.key,
            "case_id": event.case_number,
            "status": event.status,
            "event_time": local,
            "reason": event.reason,
            "result": event.result,
            "event_id": str(event.seq),
            app: self.client[0],
            stamp_field: stamp,
            nonce_field: uuid.uuid4().hex,
        }
        kept = {k: v for k, v in params.items() if v != ""}
        base = "&".join(f"{k}={kept[k]}" for k in sorted(kept))
        sign = hashlib.new("sm3", f"{base}&key={self.client[1]}".encode()).hexdigest()
        kept["sign"] = sign.upper() if self.profile.form_upper else sign
        headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
        return urlencode(kept).encode(), headers

    # --- handling results ------------------------------------------------------------------
    def answer(self, req: Incoming, now: float) -> Answer | None:
        """The answer to a poll or a handling result, or None for anything else."""
        family = self.profile.family
        if family == "soap" and "SubmitHandlingResult" in req.headers.get("soapaction", ""):
            return self._result(req, now)
        if family != "soap" and req.method == "POST" and req.path.endswith(RESULT_PATHS):
            return self._result(req, now)
        return self.answer_poll(req, now) if self.polled else None

    def _result(self, req: Incoming, now: float) -> Answer:
        p = self.profile
        problem = self._result_auth(req, now)
        if problem:
            return render(p, Verdict.AUTH, message=problem)
        key, fields = self._result_fields(req)
        if not key:
            return render(p, Verdict.INVALID, message="no result id")
        with self._lock:
            self.result_submissions += 1
            known = self.results.get(key)
            if known is not None:
                return render(p, Verdict.DUPLICATE, known["receipt_no"], "duplicate")
            receipt = f"{p.case_prefix}R{len(self.results) + 1:06d}"
            self.results[key] = {**fields, "receipt_no": receipt}
        return render(p, Verdict.OK, receipt, "accepted")

    def _result_auth(self, req: Incoming, now: float) -> str | None:
        p = self.profile
        if p.family == "oauth_json":
            scheme, _, token = req.headers.get("authorization", "").partition(" ")
            ok = scheme.lower() == "bearer" and self.city.token_valid(token, now)
            return None if ok else "invalid or expired token"
        if p.family == "soap":
            ns = p.soap[0]
            p = replace(p, soap=(ns, "", f"{ns}#SubmitHandlingResult", ""))
        with self._lock:
            return check_auth(p, req, self.client, self._nonces, now)

    def _result_fields(self, req: Incoming) -> tuple[str, dict[str, str]]:
        family = self.profile.family
        if family == "soap":
            root = parse_xml(req.body)
            op = (
                None
                if root is None
                else root.find(f".//{{{self.profile.soap[0]}}}SubmitHandlingResult")
            )
            fields = {} if op is None else {c.tag.rpartition("}")[2]: c.text or "" for c in op}
            return fields.get("resultId", ""), fields
        if family == "form_sm3":
            fields = dict(parse_qsl(req.body.decode("utf-8", "replace")))
            return fields.get("result_id", ""), fields
        try:
            data = json.loads(req.body)
        except ValueError:
            return "", {}
        fields = {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        return req.headers.get("x-idempotency-key") or req.headers.get(
            "idempotency-key", ""
        ), fields

    # --- being polled ----------------------------------------------------------------------
    def answer_poll(self, req: Incoming, now: float) -> Answer | None:
        """The answer to a poll of the change log, or None when ``req`` is not a poll."""
        if self.profile.family == "soap":
            if "QueryCaseUpdates" not in req.headers.get("soapaction", ""):
                return None
            return self._soap_poll(req, now)
        if req.method == "GET" and req.path.endswith("/case-updates"):
            return self._json_poll(req, now)
        return None

    def _page(self, cursor: str, limit: int) -> tuple[list[Event], str]:
        after = int(cursor) if cursor.isdigit() else 0
        after = max(0, after - self.plan.overlap)
        with self._lock:
            page = [e for e in self._log if e.seq > after][:limit]
            last = page[-1].seq if page else max(after, int(cursor) if cursor.isdigit() else 0)
        return page, str(last)

    def _soap_poll(self, req: Incoming, now: float) -> Answer:
        ns = self.profile.soap[0]
        polling = replace(self.profile, soap=(ns, "", f"{ns}#QueryCaseUpdates", ""))
        with self._lock:
            problem = check_auth(polling, req, self.client, self._nonces, now)
        if problem:
            return _soap_fault("wsse:FailedAuthentication", problem)
        root = parse_xml(req.body)
        cursor = root.findtext(f".//{{{ns}}}cursor", "") if root is not None else ""
        limit_text = root.findtext(f".//{{{ns}}}limit", "100") if root is not None else "100"
        page, last = self._page(cursor, int(limit_text or 100))
        envelope = ET.Element(f"{{{SOAP_NS}}}Envelope")
        body = ET.SubElement(envelope, f"{{{SOAP_NS}}}Body")
        answer = ET.SubElement(body, f"{{{ns}}}QueryCaseUpdatesResponse")
        ET.SubElement(answer, f"{{{ns}}}nextCursor").text = last
        for e in page:
            update = ET.SubElement(answer, f"{{{ns}}}update")
            for tag, value in (
                ("outId", e.key),
                ("caseNo", e.case_number),
                ("status", e.status),
                ("time", datetime.fromtimestamp(e.at_ms / 1000, CST).isoformat()),
                ("reason", e.reason),
                ("result", e.result),
                ("eventId", str(e.seq)),
            ):
                ET.SubElement(update, f"{{{ns}}}{tag}").text = value
        data = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
        return Answer(200, data, {"content-type": "text/xml; charset=utf-8"})

    def _json_poll(self, req: Incoming, now: float) -> Answer:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.city.token_valid(token, now):
            return Answer(401, b'{"error":"invalid_token"}', {"content-type": "application/json"})
        query = dict(parse_qsl(req.query, keep_blank_values=True))
        page, last = self._page(query.get("cursor", ""), int(query.get("limit") or 100))
        body = {
            "next_cursor": last,
            "updates": [
                {
                    "idempotency_key": e.key,
                    "case_no": e.case_number,
                    "status": e.status,
                    "time": str(e.at_ms),
                    "reason": e.reason,
                    "result": e.result,
                    "event_id": str(e.seq),
                }
                for e in page
            ],
        }
        return Answer(200, json.dumps(body).encode(), {"content-type": "application/json"})


def _soap_fault(code: str, text: str) -> Answer:
    envelope = ET.Element(f"{{{SOAP_NS}}}Envelope")
    fault = ET.SubElement(ET.SubElement(envelope, f"{{{SOAP_NS}}}Body"), f"{{{SOAP_NS}}}Fault")
    ET.SubElement(fault, "faultcode").text = code
    ET.SubElement(fault, "faultstring").text = text
    data = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
    return Answer(500, data, {"content-type": "text/xml; charset=utf-8"})
