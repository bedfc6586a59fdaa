"""The caller's webhook signing secret: ``GET /v1/webhooks/secret``."""
from __future__ import annotations

from flask import Blueprint, current_app
from spectree import Response as Responses

from m2fp_contract.errors import ErrorCode as E
from m2fp_contract.schema import WebhookSecret
from common.services import Services
from common.webhooks import tenant_secret
from api.errors import ApiError
from api.openapi import errors, spec
from api.routes import SECURITY, caller, identify_caller

webhooks = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")
webhooks.before_request(identify_caller)


@webhooks.get("/secret")
@spec.validate(tags=["webhooks"], security=SECURITY, resp=Responses(
    HTTP_200=(WebhookSecret, "the secret that signs every webhook of the caller's tenant"),
    **errors(E.UNAUTHORIZED, E.WEBHOOKS_DISABLED)))
def get_secret():
    """The webhook signing secret

    Every delivery to a webhook of this tenant's jobs carries a Standard Webhooks
    signature made with this secret (`whsec_` + base64); verify it before trusting a
    body (docs/webhooks.md). It changes only when the operator changes
    WEBHOOK_SIGNING_KEY.
    """
    services: Services = current_app.extensions["m2fp"]
    if not services.settings.webhook_signing_key:
        raise ApiError("this service sends no webhooks: its operator has not set WEBHOOK_SIGNING_KEY",
                       E.WEBHOOKS_DISABLED)
    tenant = caller().tenant
    return WebhookSecret(tenant=tenant, secret=tenant_secret(services.settings.webhook_signing_key, tenant)).model_dump()
