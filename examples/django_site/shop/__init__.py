"""A minimal Django project that sends mail through mailpolicy.django.EmailBackend."""
