"""Property-based test of the identity rules (docs/architecture.md, "Identity").

A hypothesis state machine plays random sequences across a few browsers (devices) and people: page
views stored by ingest (some re-sent), form submissions and tracked-link clicks through their public
services, membership logins, and the identity tasks a worker would run, in any order, some delivered
twice. After every step the database must agree with a small model of the rules:

1. no visit is lost or counted twice (``visits`` rows and ``sum(visitors.visit_count)`` equal the
   distinct hits sent);
2. a visitor has at most one contact, the one the latest applicable evidence named (a click never
   re-points a device with a live login), and every link, re-point and refusal is an identity event;
3. a contact's first touch, once set, never changes;
4. no two contacts merge without the explicit request: none has ``merged_into``, and every person
   (email, any case) is exactly one live contact;
5. a visit stored while its device was identified keeps that contact; a visit stored while the
   device was anonymous belongs to nobody, or (once the queued merges have run) to the first contact
   the device was linked to: never to one the device was never linked to, never moved by a re-point.

The worker is simulated in-process: the outbox rows written for this test's tenant are taken out in
the same transaction that wrote them (so neither the publisher nor beat's sweep can hand them to a
real worker of the test session) and the rules below run the Celery tasks themselves, eagerly.
``TRAILMARK_PROPERTY_EXAMPLES`` raises the number of examples for a longer bug hunt.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import event, text
from sqlmodel import Session

from tenants.accounts.service import signup
from tenants.contacts.service import ContactChanges, create_contact
from tenants.conversions.service import RECORD_TASK as CONVERSION_RECORD_TASK
from tenants.forms import service as forms
from tenants.identity.service import MERGE_TASK, LinkOutcome
from tenants.isolation import TENANT_KEY, tenant_session
from tenants.links import service as links
from tenants.memberships import service as memberships
from tenants.models import Evidence, new_id
from tenants.outbox import service as outbox
from tenants.security.tokens import get_signer
from tenants.tracking.hits import Envelope, Hit, Utm
from tenants.tracking.ingest import ensure_partitions_for, store_envelopes
from tenants.tracking.sites import create_site
from tenants.tracking.visitors import VISITOR_PURPOSE
from workers.identity import merge_history

pytestmark = pytest.mark.slow

ORIGIN = "https://props.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
PEOPLE = ("monica@example.com", "bob@example.com", "carol@example.com")
DEVICES = 3
PASSWORD = "correct horse battery"
DELIVERY_LAG_MS = 1000
"""A hit reaches ingest about a second after the browser stamped it (the collect stream)."""
IDENTITY_KINDS = (LinkOutcome.LINKED.value, LinkOutcome.REPOINTED.value, LinkOutcome.REFUSED.value)

device_index = st.integers(0, DEVICES - 1)
person_index = st.integers(0, len(PEOPLE) - 1)


@dataclass(frozen=True)
class Message:
    """One outbox row, as the worker would receive it."""

    id: UUID
    task: str
    args: tuple[Any, ...]


class OutboxTap:
    """Takes the outbox rows of the watched tenants out in the transaction that wrote them."""

    def __init__(self) -> None:
        self.queues: dict[UUID, list[Message]] = {}

    def before_commit(self, session: Session) -> None:
        tenant_id = session.info.get(TENANT_KEY)
        queue = self.queues.get(UUID(str(tenant_id))) if tenant_id is not None else None
        if queue is None:
            return
        session.flush()
        rows = session.execute(text("DELETE FROM outbox RETURNING id, task, args, created_at")).all()
        for row in sorted(rows, key=lambda r: (r.created_at, r.id)):
            if row.task in _NOT_IDENTITY:
                continue  # work that follows an identification but changes no identity (ad conversions)
            queue.append(Message(row.id, row.task, tuple(row.args)))


_NOT_IDENTITY = frozenset({CONVERSION_RECORD_TASK})


_tap: OutboxTap | None = None


@pytest.fixture
def outbox_tap() -> Iterator[OutboxTap]:
    """Nothing of this test is published: the state machine plays the worker."""
    global _tap
    saved = outbox._publisher
    outbox.set_publisher(None)
    _tap = OutboxTap()
    event.listen(Session, "before_commit", _tap.before_commit)
    try:
        yield _tap
    finally:
        event.remove(Session, "before_commit", _tap.before_commit)
        _tap = None
        outbox.set_publisher(saved)


@dataclass
class Device:
    visitor_id: UUID
    token: str
    clock_offset_ms: int = 0
    hits: list[Hit] = field(default_factory=list)
    last_ts: int = 0
    # The model of what the database should say about this browser.
    contact_id: UUID | None = None
    evidence: Evidence | None = None
    linked: list[UUID] = field(default_factory=list)
    """Every contact this device was ever linked to, in order."""
    live_login: bool = False
    session_id: str | None = None
    """The membership session the browser holds."""


def wall_ms() -> int:
    return int(time.time() * 1000)


class IdentityMachine(RuleBasedStateMachine):
    """One fresh tenant per example: a site with a form, three devices, three people."""

    CLOCK_SKEW_MS: tuple[int, ...] = (0, 600_000)
    """How far off a device's clock may be (hits carry the browser's time; collect accepts a day ahead).
    ``(0, 600_000)`` also plays browsers ten minutes fast."""
    TOUCH_CHECKS = True
    """Also check, once the merges settle, that a contact's first touch is one of its own visits and
    is set as soon as it has visits."""

    def __init__(self) -> None:
        super().__init__()
        assert _tap is not None, "use the outbox_tap fixture"
        result = signup(name="Props", owner_email=f"owner-{new_id().hex}@props.example", password=PASSWORD)
        self.tenant_id = result.tenant.id
        self.queue: list[Message] = []
        _tap.queues[self.tenant_id] = self.queue
        now = wall_ms()
        with tenant_session(self.tenant_id) as session:
            site = create_site(session, name="Props", allowed_origins=[ORIGIN])
            form = forms.create_form(
                session,
                site_id=site.id,
                name="Newsletter",
                fields=[
                    {"name": "email", "maps_to": "email", "type": "email"},
                    {"name": "first_name", "maps_to": "first_name"},
                ],
                min_fill_seconds=0,
            )
            membership_site = memberships.create_membership_site(session, name="Members", registration="open")
            self.site_id, self.form_key, self.membership_site_id = site.id, form.form_key, membership_site.id
        ensure_partitions_for(
            [
                Envelope(self.tenant_id, self.site_id, new_id(), now, [Hit(new_id(), ts, ORIGIN)])
                for ts in (now - 24 * 3600 * 1000, now, now + 24 * 3600 * 1000)
            ]
        )
        signer = get_signer()
        self.devices: list[Device] = []
        for _ in range(DEVICES):
            visitor_id = new_id()
            self.devices.append(Device(visitor_id, signer.sign(VISITOR_PURPOSE, self.tenant_id, visitor_id)))
        self.by_visitor = {device.visitor_id: index for index, device in enumerate(self.devices)}
        self.contacts: dict[int, UUID] = {}
        self.link_tokens: dict[int, str] = {}
        self.members: set[int] = set()
        self.ingest_contact: dict[UUID, tuple[int, UUID | None]] = {}
        """hit id -> (device, the device's contact when the hit was stored)."""
        self.first_touch: dict[UUID, tuple[Any, Any]] = {}
        self.events: Counter[tuple[Any, ...]] = Counter()
        self.hit_serial = 0

    def teardown(self) -> None:
        if _tap is not None:
            _tap.queues.pop(self.tenant_id, None)

    # --- the model ------------------------------------------------------------------------------

    def apply_evidence(self, index: int, contact_id: UUID, evidence: Evidence) -> LinkOutcome:
        """The rules, restated: what linking this device to this contact must do."""
        device = self.devices[index]
        if device.contact_id == contact_id:
            if device.evidence is None or device.evidence.rank < evidence.rank:
                device.evidence = evidence
            return LinkOutcome.UNCHANGED
        if device.contact_id is not None and device.live_login and evidence != Evidence.LOGIN:
            outcome = LinkOutcome.REFUSED
        else:
            outcome = LinkOutcome.LINKED if device.contact_id is None else LinkOutcome.REPOINTED
        previous = device.contact_id
        self.events[(device.visitor_id, outcome.value, contact_id, previous, evidence.value)] += 1
        if outcome != LinkOutcome.REFUSED:
            device.contact_id, device.evidence = contact_id, evidence
            device.linked.append(contact_id)
        return outcome

    def known_contact(self, person: int, contact_id: UUID) -> None:
        """A person is one contact, found again by email whatever its case."""
        assert self.contacts.setdefault(person, contact_id) == contact_id, f"{PEOPLE[person]} became two contacts"

    def taken(self, mark: int) -> list[Message]:
        """The messages enqueued since ``mark`` (the queue's length before an action)."""
        return self.queue[mark:]

    def check_merge_enqueued(self, mark: int, index: int, contact_id: UUID, outcome: LinkOutcome) -> None:
        merges = [m for m in self.taken(mark) if m.task == MERGE_TASK]
        # Only a first link has anonymous history to merge; a re-pointed device's past stays put.
        if outcome == LinkOutcome.LINKED:
            assert len(merges) == 1, merges
            assert merges[0].args[:2] == (str(self.devices[index].visitor_id), str(contact_id))
        else:
            assert merges == [], f"{outcome} enqueued {merges}"

    # --- what browsers and people do ------------------------------------------------------------

    @rule(
        index=device_index,
        campaign=st.booleans(),
        resend=st.sampled_from(["none", "earlier", "twice in the batch"]),
        data=st.data(),
    )
    def visit(self, index: int, campaign: bool, resend: str, data: st.DataObject) -> None:
        """A page view stored by ingest; delivery is at least once, so it may come with a re-sent hit."""
        device = self.devices[index]
        if not device.hits:  # a browser's clock is off by the same amount all along
            device.clock_offset_ms = data.draw(st.sampled_from(self.CLOCK_SKEW_MS), label="clock offset")
        self.hit_serial += 1
        ts = max(device.last_ts + 1, wall_ms() - DELIVERY_LAG_MS + device.clock_offset_ms)
        device.last_ts = ts
        utm = Utm(source="newsletter", medium="email", campaign=f"c{self.hit_serial}") if campaign else Utm()
        hit = Hit(new_id(), ts, f"{ORIGIN}/p{self.hit_serial}", path=f"/p{self.hit_serial}", utm=utm)
        hits = [hit]
        if resend == "earlier" and device.hits:
            hits.insert(0, data.draw(st.sampled_from(device.hits), label="re-sent hit"))
        elif resend == "twice in the batch":
            hits.append(hit)
        envelope = Envelope(
            tenant_id=self.tenant_id,
            site_id=self.site_id,
            visitor_id=device.visitor_id,
            received_at=wall_ms(),
            hits=hits,
            user_agent=BROWSER,
            ip="203.0.113.0",
        )
        with tenant_session(self.tenant_id) as session:
            stored = store_envelopes(session, [envelope])
        assert stored == 1, f"{stored} visits stored from one new hit"
        device.hits.append(hit)
        self.ingest_contact[hit.hit_id] = (index, device.contact_id)

    @rule(index=device_index, person=person_index, shout=st.booleans())
    def submit_form(self, index: int, person: int, shout: bool) -> None:
        """The form on the page: the contact is upserted by email and the browser identified by it."""
        device = self.devices[index]
        email = PEOPLE[person].upper() if shout else PEOPLE[person]
        now = wall_ms()
        mark = len(self.queue)
        result = forms.submit(
            self.form_key,
            {"email": email, "first_name": email.split("@")[0].title(), "tm_started": str(now - 5000)},
            forms.SubmissionContext(
                origin=ORIGIN, ip=None, visitor_tokens=(device.token,), page_url=f"{ORIGIN}/signup", now_ms=now
            ),
        )
        assert result.accepted and result.contact_id is not None
        assert not result.new_visitor and result.visitor_token == device.token
        self.known_contact(person, result.contact_id)
        outcome = self.apply_evidence(index, result.contact_id, Evidence.FORM)
        self.check_merge_enqueued(mark, index, result.contact_id, outcome)

    @rule(index=device_index, person=person_index, same_site=st.booleans())
    def click_link(self, index: int, person: int, same_site: bool) -> None:
        """A tracked email link to the person, clicked on this device. The redirect identifies the
        browser when it carries our cookie (``same_site``); the target's tracker exchanges the one-time
        code either way, which identifies it (again)."""
        device = self.devices[index]
        token = self.link_token(person)
        contact_id = self.contacts[person]
        mark = len(self.queue)
        clicked = links.click(token, method="GET", user_agent=BROWSER, cookie_token=device.token if same_site else None)
        assert clicked.identifies, clicked.reason
        if same_site:
            assert clicked.visitor_token == device.token
            outcome = self.apply_evidence(index, contact_id, Evidence.EMAIL_CLICK)
            self.check_merge_enqueued(mark, index, contact_id, outcome)
        mark = len(self.queue)
        code = parse_qs(urlsplit(clicked.redirect_to).query)[links.CODE_PARAM][0]
        exchanged = links.exchange_code(
            code, tenant_id=self.tenant_id, site_id=self.site_id, visitor_tokens=(device.token,)
        )
        assert exchanged is not None and exchanged.visitor_id == device.visitor_id
        outcome = self.apply_evidence(index, contact_id, Evidence.EMAIL_CLICK)
        self.check_merge_enqueued(mark, index, contact_id, outcome)
        assert links.exchange_code(code, tenant_id=self.tenant_id, site_id=self.site_id, visitor_tokens=()) is None

    @rule(index=device_index, person=person_index)
    def log_in(self, index: int, person: int) -> None:
        """A membership login on the device (registering first if new): linked by login, and while the
        session lives a click never re-points the device. The browser presents its previous session."""
        device = self.devices[index]
        mark = len(self.queue)
        session: dict[str, Any] = {"presented_session": device.session_id, "visitor_tokens": (device.token,)}
        if person in self.members:
            result = memberships.log_in(
                self.tenant_id, self.membership_site_id, email=PEOPLE[person], password=PASSWORD, ip=None, **session
            )
        else:
            memberships.request_registration(
                self.tenant_id, self.membership_site_id, email=PEOPLE[person], first_name=None, next_path=None, ip=None
            )
            mail = self.queue.pop(mark)  # the link that proves the address, read by its owner
            link = re.search(r"\S+/register/confirm\?\S+", mail.args[2])
            assert link is not None, mail
            token = parse_qs(urlsplit(link.group(0)).query)["token"][0]
            result = memberships.complete_registration(
                self.tenant_id, self.membership_site_id, token=token, password=PASSWORD, **session
            )
            self.members.add(person)
        assert result.visitor_token == device.token
        device.session_id = result.session.session_id
        contact_id = UUID(result.session.contact_id)
        self.known_contact(person, contact_id)
        outcome = self.apply_evidence(index, contact_id, Evidence.LOGIN)
        device.live_login = True
        self.check_merge_enqueued(mark, index, contact_id, outcome)

    @precondition(lambda self: any(device.session_id for device in self.devices))
    @rule(data=st.data())
    def log_out(self, data: st.DataObject) -> None:
        index = data.draw(st.sampled_from([i for i, d in enumerate(self.devices) if d.session_id]), label="device")
        device = self.devices[index]
        memberships.log_out(self.tenant_id, device.session_id)
        device.session_id, device.live_login = None, False

    def link_token(self, person: int) -> str:
        """The person's tracked link (the contact made by the tenant first if new), sent a minute ago."""
        if person in self.link_tokens:
            return self.link_tokens[person]
        with tenant_session(self.tenant_id) as session:
            if person not in self.contacts:
                self.contacts[person] = create_contact(session, ContactChanges(email=PEOPLE[person])).id
            link = links.create_link(session, contact_id=self.contacts[person], target_url=f"{ORIGIN}/offer")
            session.flush()
            session.execute(
                text("UPDATE email_links SET created_at = now() - interval '1 minute' WHERE id = :id"), {"id": link.id}
            )
            self.link_tokens[person] = links.link_url(link).split("/l/", 1)[1]
        return self.link_tokens[person]

    # --- the worker -----------------------------------------------------------------------------

    def deliver(self, message: Message) -> None:
        """Run one task as the worker would: the Celery task itself, eagerly, in this process. Merges
        are idempotent, so running one twice (at-least-once delivery) changes nothing more."""
        assert message.task == MERGE_TASK == merge_history.name, f"unexpected task {message}"
        mark = len(self.queue)
        merge_history.apply(args=[str(self.tenant_id), *message.args], task_id=str(message.id), throw=True)
        assert self.taken(mark) == [], "a merge enqueued more work"

    @precondition(lambda self: bool(self.queue))
    @rule(data=st.data())
    def run_one_merge(self, data: st.DataObject) -> None:
        """The worker picks any queued merge (queues reorder; tasks retry); it may be delivered again."""
        message = self.queue.pop(data.draw(st.integers(0, len(self.queue) - 1), label="task"))
        self.deliver(message)
        if data.draw(st.booleans(), label="deliver again later"):
            self.queue.append(message)

    @rule(data=st.data())
    def run_pending_merges(self, data: st.DataObject) -> None:
        """The worker catches up, in any order; then every anonymous history has reached its contact."""
        while self.queue:
            order = data.draw(st.permutations(range(len(self.queue))), label="order")
            batch = [self.queue[i] for i in order]
            self.queue.clear()
            for message in batch:
                self.deliver(message)
        self.check_settled()

    # --- what must always hold ------------------------------------------------------------------

    def rows(self, sql: str) -> list[Any]:
        with tenant_session(self.tenant_id) as session:
            return list(session.execute(text(sql)).all())

    @invariant()
    def visits_are_stored_exactly_once(self) -> None:
        sent = sum(len(device.hits) for device in self.devices)
        ((stored, counted),) = self.rows(
            "SELECT (SELECT count(*) FROM visits), (SELECT coalesce(sum(visit_count), 0) FROM visitors)"
        )
        assert stored == sent, f"{stored} visits stored, {sent} distinct hits sent"
        assert counted == sent, f"visitors count {counted} visits, {sent} distinct hits sent"

    @invariant()
    def each_visitor_is_the_contact_the_rules_say(self) -> None:
        stored = {row.id: row for row in self.rows("SELECT id, contact_id, evidence, visit_count FROM visitors")}
        assert set(stored) <= set(self.by_visitor), "a visitor appeared that no device is"
        for index, device in enumerate(self.devices):
            row = stored.get(device.visitor_id)
            contact_id, evidence = (row.contact_id, row.evidence) if row else (None, None)
            assert contact_id == device.contact_id, f"device {index} is {contact_id}, the rules say {device.contact_id}"
            assert evidence == (device.evidence.value if device.evidence else None), f"device {index}: {evidence}"
            assert (row.visit_count if row else 0) == len(device.hits), f"device {index} visit_count"
        events = Counter(
            (row.visitor_id, row.kind, row.contact_id, row.previous_contact_id, row.evidence)
            for row in self.rows(
                "SELECT visitor_id, kind, contact_id, previous_contact_id, evidence FROM identity_events "
                f"WHERE kind IN {IDENTITY_KINDS!r}"
            )
        )
        assert events == self.events, f"identity events {events}, the rules say {self.events}"

    @invariant()
    def first_touch_once_set_never_changes(self) -> None:
        for row in self.rows("SELECT id, first_touch, first_touch_at FROM contacts WHERE first_touch IS NOT NULL"):
            before = self.first_touch.setdefault(row.id, (row.first_touch, row.first_touch_at))
            assert before == (row.first_touch, row.first_touch_at), f"contact {row.id}: first touch {before} changed"

    @invariant()
    def contacts_never_merge_by_themselves(self) -> None:
        contacts = self.rows("SELECT id, lower(email) AS email, merged_into FROM contacts")
        assert [c for c in contacts if c.merged_into is not None] == [], "contacts merged without a request"
        emails = Counter(c.email for c in contacts)
        assert all(n == 1 for n in emails.values()), f"one person, several contacts: {emails}"
        assert {c.email: c.id for c in contacts} == {PEOPLE[p]: cid for p, cid in self.contacts.items()}

    @invariant()
    def visits_belong_to_their_device_contacts(self) -> None:
        for row in self.rows("SELECT hit_id, visitor_id, contact_id FROM visits"):
            index, at_ingest = self.ingest_contact[row.hit_id]
            device = self.devices[index]
            assert row.visitor_id == device.visitor_id
            assert row.contact_id is None or row.contact_id in device.linked, (
                f"visit {row.hit_id} of device {index} points at {row.contact_id}, never its contact"
            )
            if at_ingest is not None:
                assert row.contact_id == at_ingest, f"visit {row.hit_id} of {at_ingest} moved to {row.contact_id}"
            else:
                first = device.linked[0] if device.linked else None
                assert row.contact_id in (None, first), (
                    f"anonymous visit {row.hit_id} of device {index} went to {row.contact_id}, "
                    f"not to its first contact {first}: a later re-point took earlier history"
                )

    def check_settled(self) -> None:
        """Nothing is queued: every anonymous history has been merged into its first contact."""
        for row in self.rows("SELECT hit_id, contact_id FROM visits WHERE contact_id IS NULL"):
            index, _ = self.ingest_contact[row.hit_id]
            assert not self.devices[index].linked, f"device {index} was identified; visit {row.hit_id} not merged"
        if self.TOUCH_CHECKS:
            self.check_touches()

    def check_touches(self) -> None:
        owned = {(row.contact_id, row.occurred_at) for row in self.rows("SELECT contact_id, occurred_at FROM visits")}
        with_visits = {contact_id for contact_id, _ in owned}
        for row in self.rows("SELECT id, first_touch_at FROM contacts"):
            if row.first_touch_at is not None:
                assert (row.id, row.first_touch_at) in owned, f"contact {row.id}'s first touch is not its own visit"
            else:
                assert row.id not in with_visits, f"contact {row.id} has visits but no first touch"


def examples(default: int) -> int:
    return int(os.environ.get("TRAILMARK_PROPERTY_EXAMPLES", default))


def test_identity_rules_hold_for_random_sequences(outbox_tap: OutboxTap) -> None:
    run_state_machine_as_test(
        IdentityMachine,
        settings=settings(
            max_examples=examples(40),
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
