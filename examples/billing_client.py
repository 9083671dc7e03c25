#!/usr/bin/env python3
"""A small standalone client of Hako's billing API (/api/billing/v1), standard library only.

It runs a whole service lifecycle the way a billing module (WHMCS, Blesta, ...) would:

    test connection -> create account -> create service -> wait until it runs ->
    read usage -> suspend -> unsuspend -> change plan -> terminate

Every mutating call carries an Idempotency-Key; every step is printed. Configuration by
environment:

    HAKO_URL            e.g. https://panel.example.net          (required)
    HAKO_BILLING_TOKEN  hko_<prefix>_<secret>                    (required; all scopes)
    HAKO_PLAN           plan to create the service from         (default: the first plan)
    HAKO_PLAN2          plan to change to                       (default: the second plan, else HAKO_PLAN)
    HAKO_TEMPLATE       OS template                             (default: the first template)
    HAKO_EXTERNAL_ID    billing's service id                    (default: random)
    HAKO_WAIT_TIMEOUT   seconds to wait for each job            (default: 600)

Exit status 0 when every step succeeded; on an error the problem+json ``detail`` is printed
(that string is what a WHMCS module would show to staff).
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone


class ApiError(Exception):
    """A non-2xx answer: ``status`` and the problem document (``code``, ``detail``...)."""

    def __init__(self, status: int, problem: dict):
        self.status = status
        self.problem = problem
        super().__init__(f"HTTP {status} {problem.get('code', '')}: {problem.get('detail', problem)}")


class Response:
    def __init__(self, status: int, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self):
        return f"<Response {self.status}>"


class HakoBilling:
    """The billing API at ``url`` with ``token``; ``idempotency_prefix`` names this run's keys."""

    def __init__(self, url: str, token: str, *, timeout: float = 30, idempotency_prefix: str | None = None,
                 out=sys.stdout):
        self.base = url.rstrip("/") + "/api/billing/v1"
        self.token = token
        self.timeout = timeout
        self.run = idempotency_prefix or uuid.uuid4().hex[:12]
        self.out = out

    # -- transport ------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: dict | None = None, *, key: str | None = None,
                query: dict | None = None) -> Response:
        url = self.base + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers["Idempotency-Key"] = key
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                raw = r.read()
                return Response(r.status, r.headers, json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                problem = json.loads(raw)
            except ValueError:
                problem = {"detail": raw.decode(errors="replace")[:300]}
            raise ApiError(e.code, problem) from None

    def post(self, path: str, body: dict | None = None, *, step: str) -> Response:
        """POST with an Idempotency-Key derived from this run and the step: a retry of the
        same step (after a timeout, say) replays instead of acting twice."""
        return self.request("POST", path, body or {}, key=f"{self.run}-{step}")

    def get(self, path: str, **query) -> Response:
        return self.request("GET", path, query=query or None)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- the verbs ------------------------------------------------------------------------------

    def test(self) -> dict:
        return self.get("/test").body

    def plans(self) -> list:
        return self.get("/plans").body["data"]

    def templates(self) -> list:
        return self.get("/templates").body["data"]

    def create_account(self, *, external_id: str, name: str, email: str) -> Response:
        return self.post("/accounts", {"external_id": external_id, "name": name, "email": email},
                         step="create-account")

    def create_service(self, *, account: str, plan: str, template: str, external_id: str,
                       hostname: str | None = None) -> Response:
        body = {"account": account, "plan": plan, "template": template, "external_id": external_id}
        if hostname:
            body["hostname"] = hostname
        return self.post("/services", body, step="create-service")

    def service(self, ref: str) -> dict:
        return self.get(f"/services/{ref}").body

    def usage(self, ref: str, start: datetime, end: datetime) -> dict:
        return self.get(f"/services/{ref}/usage", **{"from": start.isoformat(), "to": end.isoformat()}).body

    def suspend(self, ref: str, reason: str = "overdue") -> Response:
        return self.post(f"/services/{ref}/suspend", {"reason": reason}, step="suspend")

    def unsuspend(self, ref: str) -> Response:
        return self.post(f"/services/{ref}/unsuspend", {}, step="unsuspend")

    def change_plan(self, ref: str, plan: str) -> Response:
        return self.post(f"/services/{ref}/change-plan", {"plan": plan}, step="change-plan")

    def terminate(self, ref: str) -> Response:
        return self.post(f"/services/{ref}/terminate", {}, step="terminate")

    def wait_until(self, ref: str, what: str, done, *, timeout: float = 600, poll: float = 2) -> dict:
        """Poll the service until ``done(service)``; an ``error`` status is an error."""
        deadline = time.monotonic() + timeout
        while True:
            svc = self.service(ref)
            if done(svc):
                return svc
            if svc["status"] == "error":
                raise RuntimeError(f"service {ref} went to error while waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {ref} not {what} after {timeout:.0f}s (status {svc['status']}, "
                                   f"state {svc['state']})")
            time.sleep(poll)


def lifecycle(api: HakoBilling, *, plan: str | None = None, plan2: str | None = None,
              template: str | None = None, external_id: str | None = None, wait_timeout: float = 600) -> dict:
    """Run every step; returns {step: HTTP status} (raises ApiError on an unexpected answer)."""
    statuses = {}
    ext = external_id or f"demo-{api.run}"
    info = api.test()
    api.say(f"[test] connected as {info['account']} (scopes: {', '.join(info['scopes'])})")
    plans = [p["name"] for p in api.plans()]
    plan = plan or plans[0]
    plan2 = plan2 or next((p for p in plans if p != plan), plan)
    template = template or api.templates()[0]["name"]

    r = api.create_account(external_id=f"{ext}-client", name="Demo Customer", email=f"{ext}@example.invalid")
    statuses["create-account"] = r.status
    api.say(f"[create-account] {r.status}: account {r.body['id']} (ext:{r.body['external_id']})")

    r = api.create_service(account=f"ext:{ext}-client", plan=plan, template=template, external_id=ext)
    statuses["create-service"] = r.status
    ref = f"ext:{ext}"
    api.say(f"[create-service] {r.status}: service {r.body['id']} on plan {plan}, status {r.body['status']}, "
            f"addresses {', '.join(r.body['addresses']) or '-'}, job {r.body['job']['id'] if r.body['job'] else '-'}")

    # Hako starts a service it creates for billing: it is provisioned once it runs.
    svc = api.wait_until(ref, "running", lambda s: s["status"] == "active" and s["state"] == "running",
                         timeout=wait_timeout)
    api.say(f"[wait] service is {svc['status']} (state {svc['state']}, addresses {', '.join(svc['addresses'])})")

    now = datetime.now(timezone.utc)
    usage = api.usage(ref, now - timedelta(days=30), now)
    statuses["usage"] = 200
    api.say(f"[usage] last 30 days: {json.dumps(usage.get('meters', usage), sort_keys=True)[:300]}")

    r = api.suspend(ref)
    statuses["suspend"] = r.status
    api.say(f"[suspend] {r.status}: status {r.body['status']}")
    api.wait_until(ref, "stopped", lambda s: s["state"] in ("stopped", "error"), timeout=wait_timeout)

    r = api.unsuspend(ref)
    statuses["unsuspend"] = r.status
    api.say(f"[unsuspend] {r.status}: status {r.body['status']}")
    if r.status == 202:  # billing's suspension had stopped it: Hako starts it again
        api.wait_until(ref, "running", lambda s: s["state"] in ("running", "error"), timeout=wait_timeout)

    r = api.change_plan(ref, plan2)
    statuses["change-plan"] = r.status
    api.say(f"[change-plan] {r.status}: to {plan2}")
    if r.status == 202:
        api.wait_until(ref, f"on plan {plan2}", lambda s: s["plan"] == plan2, timeout=wait_timeout)

    r = api.terminate(ref)
    statuses["terminate"] = r.status
    api.say(f"[terminate] {r.status}: status {r.body['status']}")
    api.wait_until(ref, "terminated", lambda s: s["status"] == "terminated", timeout=wait_timeout)
    api.say("[done] service terminated")
    return statuses


def main() -> int:
    url, token = os.environ.get("HAKO_URL"), os.environ.get("HAKO_BILLING_TOKEN")
    if not url or not token:
        print("set HAKO_URL and HAKO_BILLING_TOKEN", file=sys.stderr)
        return 2
    api = HakoBilling(url, token)
    try:
        lifecycle(api, plan=os.environ.get("HAKO_PLAN"), plan2=os.environ.get("HAKO_PLAN2"),
                  template=os.environ.get("HAKO_TEMPLATE"), external_id=os.environ.get("HAKO_EXTERNAL_ID"),
                  wait_timeout=float(os.environ.get("HAKO_WAIT_TIMEOUT", "600")))
    except ApiError as e:
        print(f"[error] {e}", file=sys.stderr)
        return 1
    except (TimeoutError, RuntimeError, urllib.error.URLError) as e:
        print(f"[error] {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
