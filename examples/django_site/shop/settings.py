"""Settings of the example shop: Django's usual EMAIL_* settings, with the backend switched
to mailpolicy's. Every value can come from the environment (a twelve-factor habit)."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["shop"]
ROOT_URLCONF = "shop.urls"
USE_TZ = True

# --- mail: the only line that changes from Django's SMTP backend ----------------------
EMAIL_BACKEND = "mailpolicy.django.EmailBackend"
EMAIL_HOST = os.environ.get("EMAIL_HOST", "127.0.0.1")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "2525"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = os.environ.get("EMAIL_USE_TLS", "") == "1"  # STARTTLS, verified
DEFAULT_FROM_EMAIL = "Shop <orders@shop.example>"

MAILPOLICY = {
    "POLICY": "transactional",  # order mails: retry a little harder inside the request
    "POLICIES": {"newsletter": "bulk"},  # message.mailpolicy_policy = "newsletter"
    "RECIPIENT_STYLE": "mask",  # a***@example.org in logs and errors
}

# mailpolicy's events are structlog events; route them into logging like this when the
# app uses Django's LOGGING (see docs/django.md).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"shop": {"handlers": ["console"], "level": "INFO"}},
}
