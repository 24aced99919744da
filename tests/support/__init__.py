"""Helpers every test package shares: polling with a deadline (``poll``), running async
test bodies (``aio``), and PostgreSQL for tests (``pg``)."""
