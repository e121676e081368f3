"""A small Django project on the ``litegate.django`` backend (tests/dropin/test_django.py)."""

import os

SECRET_KEY = "litegate-test"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["shop"]
ROOT_URLCONF = "urls"
USE_TZ = True
DATABASES = {
    "default": {
        "ENGINE": "litegate.django",
        "NAME": os.environ["SHOP_DB"],
        "OPTIONS": {"timeout": 20, "litegate": {"synchronous": "NORMAL"}},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
