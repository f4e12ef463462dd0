"""Keyed pseudonyms for patient identifiers (HMAC-SHA256).

Raw PatientID and AccessionNumber never reach the results database: they are replaced by
``HMAC-SHA256(key, value)`` truncated to 32 hex characters (128 bits). The same value gives the
same pseudonym under the same key, so studies of one patient still join, and the audit can match
radiology reads by pseudonymised accession number. Without the key the mapping cannot be reversed
or recomputed by a dictionary attack over plausible IDs.

The key comes from ``BLOODNET_PSEUDONYM_KEY``. When it is unset a fixed development key is used
and a warning is logged once: fine for demos and tests, never for real patients.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

log = logging.getLogger(__name__)

ENV_KEY = "BLOODNET_PSEUDONYM_KEY"
#: Development-only key; a deployment sets BLOODNET_PSEUDONYM_KEY from its secret store.
DEV_KEY = "bloodnet-dev-pseudonym-key-not-for-production"
#: Hex characters kept (128 bits): collisions are negligible for any hospital's patient count.
LENGTH = 32

_warned = False


def _key() -> bytes:
    global _warned
    from bloodnet_ops.settings import current

    key = current().pseudonym_key
    if not key:
        if not _warned:
            log.warning("%s is unset: using the development pseudonym key", ENV_KEY)
            _warned = True
        key = DEV_KEY
    return key.encode()


def pseudonymise(value: str | None) -> str:
    """The keyed pseudonym of ``value`` (32 lowercase hex characters); ``""`` for an empty value.

    Surrounding whitespace is ignored, so DICOM's space padding does not change the pseudonym.
    """
    if value is None:
        return ""
    text = str(value).strip()
    if not text:
        return ""
    return hmac.new(_key(), text.encode("utf-8"), hashlib.sha256).hexdigest()[:LENGTH]
