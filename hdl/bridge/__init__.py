# SPDX-License-Identifier: BSD-2-Clause
"""Host link ("Bridge"), bottom layers: the UART PHY and the framing (byte stuffing
and CRC-16) in gateware, with the Python codec the host uses for the same frames."""

from .crc import CRC_CHECK, CRC_INIT, CRC_POLY, CRC_WIDTH, Crc16Step, crc16
from .framing import (CRC_BYTES, DECODED_BYTE, ESCAPE, ESCAPE_XOR, FLAG, MAX_FRAME, MIN_BODY,
                      PAYLOAD_BYTE, FrameDecoder, FrameDecoderModel, FrameEncoder, decode_frames,
                      encode_frame)
from .uart import MAX_BAUD_ERROR, MIN_DIVISOR, UartRx, UartTx, divisor_for

__all__ = ["CRC_WIDTH", "CRC_POLY", "CRC_INIT", "CRC_CHECK", "crc16", "Crc16Step",
           "FLAG", "ESCAPE", "ESCAPE_XOR", "CRC_BYTES", "MIN_BODY", "MAX_FRAME",
           "PAYLOAD_BYTE", "DECODED_BYTE", "encode_frame", "decode_frames", "FrameDecoderModel",
           "FrameEncoder", "FrameDecoder",
           "MIN_DIVISOR", "MAX_BAUD_ERROR", "divisor_for", "UartRx", "UartTx"]
