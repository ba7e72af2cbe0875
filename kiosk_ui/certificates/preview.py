"""PNG preview of a certificate's first page for the kiosk screen (pdfium renders the real PDF).

Previewing the PDF that will be printed, not a separate drawing, means the resident sees exactly
what comes out of the printer.
"""

from __future__ import annotations

import io

import pypdfium2 as pdfium

from device.errors import LinliError

DEFAULT_WIDTH_PX = 800


class PreviewError(LinliError, ValueError):
    """The bytes given are not a PDF pdfium can render."""


def render_page(pdf: bytes, *, width_px: int = DEFAULT_WIDTH_PX, page: int = 0) -> bytes:
    """Page ``page`` of ``pdf`` as a PNG ``width_px`` wide (height follows the page's aspect)."""
    if not 16 <= width_px <= 10_000:
        raise ValueError(f"preview width must be 16..10000 pixels, got {width_px}")
    if not isinstance(pdf, bytes | bytearray) or not pdf.startswith(b"%PDF-"):
        raise PreviewError("cannot preview: the data is not a PDF document")
    try:
        document = pdfium.PdfDocument(bytes(pdf))
    except pdfium.PdfiumError as err:
        raise PreviewError(f"cannot preview: pdfium rejects the PDF ({err})") from err
    try:
        if not 0 <= page < len(document):
            raise PreviewError(f"cannot preview page {page + 1}: the PDF has {len(document)}")
        pdf_page = document[page]
        try:
            scale = width_px / pdf_page.get_width()
            bitmap = pdf_page.render(scale=scale)
            image = bitmap.to_pil()
        finally:
            pdf_page.close()
    finally:
        document.close()
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()
