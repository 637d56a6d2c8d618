"""One module per page (docs/web.md); each lists its routes in ``ROUTES``, gathered by
``symbolon/web/routes.py``."""
