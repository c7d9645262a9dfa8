"""Send an order confirmation and answer with what happened to each recipient."""

from django.core.mail import EmailMessage
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from mailpolicy.django import DeliveryIncomplete


def confirmation(address: str) -> EmailMessage:
    return EmailMessage("Your order", "Thank you for your order.\n", to=[address])


@csrf_exempt  # an example API endpoint; keep CSRF protection in a real form view
@require_POST
def order_confirmation(request: HttpRequest) -> JsonResponse:
    address = request.POST.get("email", "").strip()
    if not address:  # Django skips a message without recipients: nothing to report
        return JsonResponse({"status": "invalid", "error": "no address given"}, status=422)
    message = confirmation(address)
    try:
        message.send()
    except DeliveryIncomplete as exc:
        # Deferred or held after the in-request retries, and no MAILPOLICY["STORE"] keeps
        # it: tell the client to try later (or configure a store and run the worker).
        return JsonResponse({"status": "not sent yet", "report": exc.report.to_dict()}, status=503)
    except ValueError as exc:  # Django refuses malformed addresses before sending
        return JsonResponse({"status": "invalid", "error": str(exc)}, status=422)
    report = message.mailpolicy_report
    if report.all_delivered:
        return JsonResponse({"status": "sent", "report": report.to_dict()})
    if report.pending:  # saved in MAILPOLICY["STORE"]: the worker will deliver it
        return JsonResponse({"status": "queued", "report": report.to_dict()}, status=202)
    return JsonResponse({"status": "refused", "report": report.to_dict()}, status=422)
