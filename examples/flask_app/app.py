"""A minimal Flask app that sends mail through mailpolicy (see README.md next to it).

    FLASK_MAIL_SERVER=127.0.0.1 FLASK_MAIL_PORT=2525 flask --app examples/flask_app/app.py run
    curl -d email=ann@example.org http://127.0.0.1:5000/orders

Settings come from ``create_app(config)``, or from ``FLASK_*`` environment variables
(``FLASK_MAIL_SERVER``, ``FLASK_MAIL_PORT``, ``FLASK_MAIL_USE_TLS``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from mailpolicy import MessageError
from mailpolicy.flask import DeliveryIncomplete, MailPolicy

mail = MailPolicy()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=25,
        MAIL_DEFAULT_SENDER="Shop <orders@shop.example>",
        MAILPOLICY_POLICY="transactional",
    )
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    mail.init_app(app)  # every setting checked here: a mistake fails at start-up

    @app.post("/orders")
    def order() -> ResponseReturnValue:
        address = request.form.get("email", "").strip()
        if not address:
            return jsonify(status="invalid", error="no address given"), 422
        message = EmailMessage()  # From: MAIL_DEFAULT_SENDER
        message["Subject"] = "Your order"
        message.set_content("Thank you for your order.\n")
        try:
            message["To"] = address  # the email package refuses CR/LF (ValueError)
            report = mail.send(message)
        except DeliveryIncomplete as exc:
            # Not delivered yet and no MAILPOLICY_STORE keeps it for a retry: say so.
            return jsonify(status="not sent yet", report=exc.report.to_dict()), 503
        except (ValueError, MessageError) as exc:  # a message that cannot be sent as built
            return jsonify(status="invalid", error=str(exc)), 422
        if report.all_delivered:
            return jsonify(status="sent", report=report.to_dict())
        if report.pending:  # saved in MAILPOLICY_STORE: the worker will deliver it
            return jsonify(status="queued", report=report.to_dict()), 202
        # bounced or invalid: a final answer about this address
        return jsonify(status="refused", report=report.to_dict()), 422

    return app
