"""PC/SC smart cards (community / social-security card): the profile codec and the pyscard reader.

``profile`` and ``apdu`` are pure; ``reader`` and ``watcher`` talk to pcscd through pyscard and
import it: import them only where a reader is wanted (``from device.pcsc.reader import ...``).
"""

from device.pcsc.profile import CardKind, CardRecord, decode_record, encode_record, read_card

__all__ = ["CardKind", "CardRecord", "decode_record", "encode_record", "read_card"]
