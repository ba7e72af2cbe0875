"""Certificates printed at the kiosk: templates as data files, A4 PDF rendering, screen preview.

The public API: :func:`load_templates` / :func:`get_template` (template.py),
:func:`render_certificate` (render.py) and :func:`render_page` for the PNG preview (preview.py).
docs/certificates.md describes the template format for community staff.
"""

from __future__ import annotations

from kiosk_ui.certificates.fields import CertificateDataError, MissingFieldError
from kiosk_ui.certificates.fonts import FontNotFoundError, find_cjk_font
from kiosk_ui.certificates.preview import PreviewError, render_page
from kiosk_ui.certificates.render import (
    LayoutError,
    RenderedCertificate,
    load_certificate_key,
    new_serial,
    render_certificate,
)
from kiosk_ui.certificates.template import (
    Template,
    TemplateError,
    get_template,
    load_template,
    load_templates,
)

__all__ = [
    "CertificateDataError",
    "FontNotFoundError",
    "LayoutError",
    "MissingFieldError",
    "PreviewError",
    "RenderedCertificate",
    "Template",
    "TemplateError",
    "find_cjk_font",
    "get_template",
    "load_certificate_key",
    "load_template",
    "load_templates",
    "new_serial",
    "render_certificate",
    "render_page",
]
