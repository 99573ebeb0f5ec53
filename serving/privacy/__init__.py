"""The consent page and banner script (issue #12): ``GET /privacy`` and ``/privacy/banner.js``,
served by the service itself, in the visitor's language.

:mod:`serving.privacy.translations` holds the languages, the gettext catalogues (``locale/``,
Babel ``.po`` files: a translator edits those only) and the choice of language for a request;
:mod:`serving.privacy.page` renders the Jinja2 templates (``templates/``) and is the ASGI app the
service mounts.
"""
