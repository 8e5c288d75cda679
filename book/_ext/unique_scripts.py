"""Sphinx extension: include each script of a page once.

sphinx-thebe 0.3.1 registers its inline configuration script (``const THEBE_JS_URL = ...``) twice under
Jupyter Book 1.x, so every page declared the same constant twice and the browser reported a
SyntaxError on each page (found by ``make test-book``). This keeps the first copy of every script
(an inline script counts as the same whether its file name is None or empty).

The list is changed in place: it is the builder's own list, to which handlers that run later (Sphinx's
MathJax among them, which adds its scripts only on pages with equations) still add. Replacing it by a
new list once dropped MathJax from every page. The handler runs early (a later handler may return a
template and stop the event) and once more late, for scripts added in between.
"""


def _key(script):
    attrs = getattr(script, "attributes", {}) or {}
    return str(getattr(script, "filename", script) or ""), tuple(sorted((k, str(v)) for k, v in attrs.items()))


def _unique_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: see the module's docstring


def setup(app):
    app.connect("html-page-context", _unique_scripts, priority=100)  # early: a later handler may return a template and stop the event
    app.connect("html-page-context", _unique_scripts, priority=950)  # and late, for scripts added in between
    return {"parallel_read_safe": True, "parallel_write_safe": True}
