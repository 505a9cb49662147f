"""The protection and promotion pages: `/admin/protections` (admins: the rules) and `/promotions` (every
signed-in key: pending requests on models it may read, with approve and reject buttons).

They are `WebPages` routes (`pages.py` lists them) with its checks: a signed-in session, pages opened only
as pages (Fetch Metadata), form posts from this site with the session's CSRF token, and every change with
the session's own key entered again (the step-up). Changes go through the same `Promotions` as the CLI and
the REST API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from hokusai_registry.admin.mlflow_admin import MlflowError
from hokusai_registry.admin.permission_models import ChangeRefused
from hokusai_registry.admin.promotion_models import RuleSpec
from hokusai_registry.admin.promotions import Promotions
from hokusai_registry.admin.registry import Unreachable
from hokusai_registry.admin.rendering import PageError, page, render
from hokusai_registry.admin.service import problems
from hokusai_registry.auth.caller import Caller
from hokusai_registry.core.refusals import Refusal
from hokusai_registry.policy.routes import ADMIN_PROTECTIONS_PATH, PROMOTIONS_PAGE_PATH
from hokusai_registry.store.protection_store import PENDING, Promotion

REMOVE_RULE_PATH = ADMIN_PROTECTIONS_PATH + "/remove"
APPROVE_PATH = PROMOTIONS_PAGE_PATH + "/approve"
REJECT_PATH = PROMOTIONS_PAGE_PATH + "/reject"
_RULE_FIELDS = ("model", "kind", "pattern", "approvers", "approvals")


class WebPages(Protocol):
    """What these pages use of `pages.WebPages` (which lists them: it cannot be imported here)."""

    promotions: Promotions

    async def _admin(self, request: Request, *, keys: bool = ..., back: str = ...) -> Caller | Response: ...

    async def _admin_form(
        self, request: Request, *, keys: bool = ..., back: str = ...
    ) -> tuple[Caller, dict[str, str]] | Response: ...

    async def _signed_in(self, request: Request) -> Caller | None: ...

    async def _keyed_form(self, request: Request, back: str) -> tuple[Caller, dict[str, str]] | Response: ...

    async def _step_up(self, request: Request, caller: Caller, form: dict[str, str]) -> Refusal | None: ...

    def _context(self, caller: Caller) -> dict[str, Any]: ...

    def _login_redirect(self, request: Request, back: str) -> Response: ...


def _actor(caller: Caller) -> str:
    return f"key:{caller.identity.key_id}"


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:]


# Rules


async def protections_page(pages: WebPages, request: Request) -> Response:
    caller = await pages._admin(request, keys=False, back=ADMIN_PROTECTIONS_PATH)
    if isinstance(caller, Response):
        return caller
    return await _render_rules(pages, caller)


async def _render_rules(
    pages: WebPages,
    caller: Caller,
    *,
    form: dict[str, str] | None = None,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> Response:
    rules = await pages.promotions.rules()
    body = render(
        "admin_protections.html",
        title="Protected aliases",
        caller=pages._context(caller),
        rows=[
            {"rule": rule, "remove": f"{REMOVE_RULE_PATH}?{urlencode({'rule': rule.id})}"} for rule in rules
        ],
        form={"model": "", "kind": "alias", "pattern": "", "approvers": "", "approvals": "1", **(form or {})},
        error=error,
        notice=notice,
    )
    return page(status, body, headers)


async def add_rule(pages: WebPages, request: Request) -> Response:
    posted = await pages._admin_form(request, keys=False, back=ADMIN_PROTECTIONS_PATH)
    if isinstance(posted, Response):
        return posted
    caller, form = posted
    values = {name: form.get(name, "").strip() for name in _RULE_FIELDS}
    refused = await pages._step_up(request, caller, form)
    if refused is not None:
        return await _render_rules(
            pages,
            caller,
            form=values,
            error=refused.plain,
            status=refused.http_status,
            headers=refused.headers,
        )
    kind = "stage" if values["kind"] == "stage" else "alias"
    try:
        spec = RuleSpec.model_validate(
            {
                "model": values["model"],
                kind: values["pattern"],
                "approvers": values["approvers"] or None,
                "approvals": values["approvals"] or "1",
            }
        )
    except ValidationError as exc:
        return await _render_rules(pages, caller, form=values, error=problems(exc.errors()), status=400)
    rule = await pages.promotions.add_rule(spec, _actor(caller))
    return await _render_rules(
        pages, caller, notice=f"Rule {rule.id} protects {rule.target} of {rule.model}."
    )


async def confirm_remove_rule(pages: WebPages, request: Request) -> Response:
    caller = await pages._admin(request, keys=False, back=ADMIN_PROTECTIONS_PATH)
    if isinstance(caller, Response):
        return caller
    query = parse_qs(request.scope["query_string"].decode("latin-1"), max_num_fields=4)
    return await _remove_confirmation(pages, caller, (query.get("rule") or [""])[0])


async def _remove_confirmation(
    pages: WebPages, caller: Caller, rule_id: str, refused: Refusal | None = None
) -> Response:
    rule = next((rule for rule in await pages.promotions.rules() if rule.id == rule_id), None)
    if rule is None:
        raise PageError(404, "No such rule", f"There is no protection rule {rule_id!r}.")
    body = render(
        "confirm_change.html",
        title=f"Remove rule {rule.id}",
        caller=pages._context(caller),
        summary=f"It protects {rule.target} of models {rule.model} ({rule.who}).",
        consequence="Whoever may edit those models can then move the alias directly. Pending requests "
        "keep the terms they were made with.",
        action=REMOVE_RULE_PATH,
        fields=(("rule", rule.id),),
        button="Remove rule",
        cancel=ADMIN_PROTECTIONS_PATH,
        error=refused.plain if refused else None,
    )
    return page(refused.http_status if refused else 200, body, refused.headers if refused else ())


async def remove_rule(pages: WebPages, request: Request) -> Response:
    posted = await pages._admin_form(request, keys=False, back=ADMIN_PROTECTIONS_PATH)
    if isinstance(posted, Response):
        return posted
    caller, form = posted
    rule_id = form.get("rule", "")
    refused = await pages._step_up(request, caller, form)
    if refused is not None:
        return await _remove_confirmation(pages, caller, rule_id, refused)
    try:
        removed = await pages.promotions.remove_rule(rule_id, _actor(caller))
    except ChangeRefused as failed:
        raise PageError(failed.reason.status, "Not removed", failed.message) from None
    return await _render_rules(pages, caller, notice=f"Rule {removed.id} removed.")


# Promotions


async def promotions_page(pages: WebPages, request: Request) -> Response:
    caller = await pages._signed_in(request)
    if caller is None:
        return pages._login_redirect(request, PROMOTIONS_PAGE_PATH)
    return await _render_promotions(pages, caller)


async def _details(pages: WebPages, promotion: Promotion) -> dict[str, Any]:
    """What an approver looks at: the version's run, its metrics and its source."""
    row: dict[str, Any] = {"p": promotion, "run_id": "", "metrics": [], "source": ""}
    registry = pages.promotions.registry
    try:
        version = (await registry.version(promotion.model, promotion.version)).get("model_version") or {}
        row["source"] = str(version.get("source") or "")
        run_id = str(version.get("run_id") or "")
        row["run_id"] = run_id
        if run_id:
            run = (await registry.run(run_id)).get("run") or {}
            metrics = (run.get("data") or {}).get("metrics") or []
            row["metrics"] = [(str(entry.get("key")), entry.get("value")) for entry in metrics][:20]
    except (MlflowError, Unreachable):
        pass  # shown without them: the version or run is gone, or MLflow is down
    return row


async def _render_promotions(
    pages: WebPages,
    caller: Caller,
    *,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> Response:
    try:
        found = await pages.promotions.requests(caller.identity)
    except ChangeRefused as refused:
        raise PageError(refused.reason.status, "Not available", refused.message) from None
    pending = [await _details(pages, promotion) for promotion in found if promotion.state == PENDING]
    closed = [promotion for promotion in found if promotion.state != PENDING][:20]
    body = render(
        "promotions.html",
        title="Promotions",
        caller=pages._context(caller),
        pending=pending,
        closed=closed,
        error=error,
        notice=notice,
    )
    return page(status, body, headers)


async def _decide(pages: WebPages, request: Request, verb: str) -> Response:
    posted = await pages._keyed_form(request, PROMOTIONS_PAGE_PATH)
    if isinstance(posted, Response):
        return posted
    caller, form = posted
    refused = await pages._step_up(request, caller, form)
    if refused is not None:
        return await _render_promotions(
            pages, caller, error=refused.plain, status=refused.http_status, headers=refused.headers
        )
    request_id = form.get("request", "").strip()
    comment = form.get("comment", "").strip()[:2000] or None
    try:
        if verb == "approve":
            decided = await pages.promotions.approve(request_id, caller.identity, comment)
        else:
            decided = await pages.promotions.reject(request_id, caller.identity, comment)
    except ChangeRefused as failed:
        return await _render_promotions(
            pages, caller, error=_sentence(failed.message), status=failed.reason.status
        )
    if decided.state == "applied":
        notice = f"Approved: {decided.model} {decided.target} is version {decided.version} now."
    elif verb == "approve":
        notice = f"Approved {decided.id} ({len(decided.approvals)} of {decided.approvals_needed})."
    else:
        notice = f"Rejected {decided.id}."
    return await _render_promotions(pages, caller, notice=notice)


async def approve(pages: WebPages, request: Request) -> Response:
    return await _decide(pages, request, "approve")


async def reject(pages: WebPages, request: Request) -> Response:
    return await _decide(pages, request, "reject")


Endpoint = Callable[["WebPages", Request], Awaitable[Response]]

# (path, method, endpoint) for `pages.py`'s route list; GET also takes HEAD.
PROMOTION_PAGES: tuple[tuple[str, str, Endpoint], ...] = (
    (ADMIN_PROTECTIONS_PATH, "GET", protections_page),
    (ADMIN_PROTECTIONS_PATH, "POST", add_rule),
    (REMOVE_RULE_PATH, "GET", confirm_remove_rule),
    (REMOVE_RULE_PATH, "POST", remove_rule),
    (PROMOTIONS_PAGE_PATH, "GET", promotions_page),
    (APPROVE_PATH, "POST", approve),
    (REJECT_PATH, "POST", reject),
)
