# SPDX-License-Identifier: BSD-2-Clause
"""NIST CAVP GCM response files from the `cryptography-vectors` package."""

from dataclasses import dataclass

import cryptography_vectors


@dataclass(frozen=True)
class GcmVector:
    section: str
    count: int
    key: bytes
    iv: bytes
    pt: bytes
    aad: bytes
    ct: bytes
    tag: bytes
    fail: bool        # decrypt files: the tag must be rejected


def load_vectors(filename, *, iv_bits=96, tag_bits=128):
    """The vectors of ``ciphers/AES/GCM/<filename>`` with the given IV and tag sizes."""
    path = f"ciphers/AES/GCM/{filename}"
    with cryptography_vectors.open_vector_file(path, "r") as file:
        lines = file.read().splitlines()
    vectors, section, record = [], {}, None

    def flush():
        if record is not None and int(section["IVlen"]) == iv_bits \
                and int(section["Taglen"]) == tag_bits:
            get = lambda name: bytes.fromhex(record.get(name, ""))  # noqa: E731
            vectors.append(GcmVector(
                section=" ".join(f"{k}={v}" for k, v in section.items()),
                count=int(record["Count"]), key=get("Key"), iv=get("IV"), pt=get("PT"),
                aad=get("AAD"), ct=get("CT"), tag=get("Tag"), fail="FAIL" in record))

    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            flush()
            record = None
            name, _, value = line.strip("[]").partition("=")
            section[name.strip()] = value.strip()
        elif line == "FAIL":
            record["FAIL"] = ""
        else:
            name, _, value = line.partition("=")
            if name.strip() == "Count":
                flush()
                record = {}
            record[name.strip()] = value.strip()
    flush()
    return vectors
