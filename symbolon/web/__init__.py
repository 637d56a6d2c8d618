"""The web UI: server-rendered pages for people (docs/web.md).

``page.py`` is the base class of every page handler, ``routes.py`` the route list the
application includes, ``pages/`` one module per page, ``templates/`` and ``static/`` what they
render and serve. ``charts.py`` and ``parts.py`` prepare the data of the shared template parts
(bar charts, tables, pagination, curl equivalents) so that templates only lay it out, escaped.
"""
