"""A shop's browser as the conversion tests play it: page views through the real collect (as tracker.js
sends them), form submissions, and the shop's tenant with a site and a form."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"

__all__ = ["BROWSER", "ORIGIN", "Browser", "connect_meta_and_google", "make_form"]


@dataclass
class Browser:
    """One browser on the shop's site: it keeps its visitor token and its first-party ad cookies."""

    client: Any
    site_key: str
    token: str | None = None
    cookies: dict[str, str] | None = None
    headers: dict[str, str] | None = None

    def view(self, path: str, **fields: Any) -> None:
        """A page view of ``path``: its UTMs and click ids read from the query, as the tracker reads them."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
        hit = {
            "hit_id": str(uuid.uuid4()),
            "ts": int(time.time() * 1000),
            "url": f"{ORIGIN}{path}",
            "path": path.split("?", maxsplit=1)[0],
            "utm": {k[4:]: v for k, v in query.items() if k.startswith("utm_")},
            "click_ids": {
                k: v for k, v in query.items() if k in ("fbclid", "gclid", "gbraid", "wbraid", "ttclid", "msclkid")
            },
            "cookies": dict(self.cookies or {}),
            **fields,
        }
        body = json.dumps({"v": 1, "token": self.token, "hits": [hit]}).encode()
        headers = {"Origin": ORIGIN, "User-Agent": BROWSER, "Content-Type": "text/plain;charset=UTF-8"}
        answer = self.client.post(
            f"/collect/{self.site_key}", content=body, headers={**headers, **(self.headers or {})}
        )
        assert answer.status_code in (202, 204), answer.text
        if answer.status_code == 202 and answer.content:
            self.token = answer.json()["token"]

    def submit(self, form_key: str, values: dict[str, str]) -> Any:
        data = {"tm_started": str(int(time.time() * 1000) - 5000), **values}
        if self.token:
            data["tm_token"] = self.token
        headers = {"Origin": ORIGIN, "User-Agent": BROWSER, "Accept": "application/json", **(self.headers or {})}
        answer = self.client.post(f"/f/{form_key}", data=data, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer


def connect_meta_and_google(client: Any, headers: dict[str, str], **events: Any) -> tuple[dict[str, Any], ...]:
    """The shop's Meta pixel and Google Ads account, both receiving leads, purchases and registrations."""
    meta = client.post(
        "/api/v1/integrations",
        json={"platform": "meta", "pixel_id": "123456789012", "access_token": "EAAtest-meta-token", **events},
        headers=headers,
    )
    assert meta.status_code == 201, meta.text
    google = client.post(
        "/api/v1/integrations",
        json={
            "platform": "google_ads",
            "customer_id": "1234567890",
            "conversion_actions": {"lead": "111", "purchase": "222", "complete_registration": "333"},
            "refresh_token": "1//test-google-refresh",
        },
        headers=headers,
    )
    assert google.status_code == 201, google.text
    return meta.json(), google.json()


def make_form(client: Any, site_id: Any, headers: dict[str, str]) -> dict[str, Any]:
    fields = [
        {"name": "email", "maps_to": "email", "type": "email"},
        {"name": "first_name", "maps_to": "first_name", "required": False},
        {"name": "phone", "maps_to": "phone", "type": "tel", "required": False},
    ]
    body = {"site_id": str(site_id), "name": "Free guide", "fields": fields, "min_fill_seconds": 1}
    answer = client.post("/api/v1/forms", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())
