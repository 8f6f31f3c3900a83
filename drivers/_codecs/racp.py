"""Record Access Control Point 0x2A52 (GLS, PLXS): requests and responses.

Spec: ble-profiles.md §7.4. The hub writes requests (encoders here) and decodes the
server's indications (Number of Stored Records, Response Code). ``decode_racp_request``
serves the emulated meters, which receive the hub's writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from agent.errors import DecodeError
from drivers._codecs._wire import Reader


class OpCode(IntEnum):
    """RACP op codes."""

    REPORT_STORED_RECORDS = 0x01
    DELETE_STORED_RECORDS = 0x02
    ABORT_OPERATION = 0x03
    REPORT_NUMBER_OF_RECORDS = 0x04
    NUMBER_OF_RECORDS_RESPONSE = 0x05
    RESPONSE_CODE = 0x06


class Operator(IntEnum):
    """RACP operators."""

    NULL = 0x00
    ALL_RECORDS = 0x01
    LESS_THAN_OR_EQUAL = 0x02
    GREATER_THAN_OR_EQUAL = 0x03
    WITHIN_RANGE = 0x04
    FIRST_RECORD = 0x05
    LAST_RECORD = 0x06


class ResponseCode(IntEnum):
    """RACP response codes (operand of the Response Code op code)."""

    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_OPERATOR = 0x03
    OPERATOR_NOT_SUPPORTED = 0x04
    INVALID_OPERAND = 0x05
    NO_RECORDS_FOUND = 0x06
    ABORT_UNSUCCESSFUL = 0x07
    PROCEDURE_NOT_COMPLETED = 0x08
    OPERAND_NOT_SUPPORTED = 0x09


FILTER_SEQUENCE_NUMBER = 0x01
FILTER_USER_FACING_TIME = 0x02
_REQUEST_OPCODES = {OpCode.REPORT_STORED_RECORDS, OpCode.DELETE_STORED_RECORDS}
_REQUEST_OPCODES |= {OpCode.ABORT_OPERATION, OpCode.REPORT_NUMBER_OF_RECORDS}
_RESPONSE_NAMES = {code.value: code.name.lower() for code in ResponseCode}
_COUNT_SIZES = (1, 2, 4)  # GLS says uint16; Nordic accepts 1/2/4 bytes (§12.6), so do we.


@dataclass(frozen=True, slots=True)
class RacpNumberOfRecords:
    """Server indication: how many stored records match the last request."""

    count: int


@dataclass(frozen=True, slots=True)
class RacpResponse:
    """Server indication: how the request with ``request_op_code`` ended.

    ``response_code`` is the raw code; ``response`` its name, "reserved" for RFU codes.
    """

    request_op_code: int
    response_code: int
    response: str

    @property
    def is_success(self) -> bool:
        """Whether the procedure completed (success)."""
        return self.response_code == ResponseCode.SUCCESS

    @property
    def is_no_records(self) -> bool:
        """Whether there was nothing to report: a normal "nothing new" outcome."""
        return self.response_code == ResponseCode.NO_RECORDS_FOUND


@dataclass(frozen=True, slots=True)
class RacpRequest:
    """A client request as the server receives it (for emulated meters).

    ``min_sequence``/``max_sequence`` are set for sequence-number filters
    (>=: min only; <=: max only; within range: both).
    """

    op_code: OpCode
    operator: Operator
    filter_type: int | None = None
    min_sequence: int | None = None
    max_sequence: int | None = None


def _request(op_code: OpCode, operator: Operator, operand: bytes = b"") -> bytes:
    return bytes((op_code, operator)) + operand


def _sequence(sequence: int) -> bytes:
    if not 0 <= sequence <= 0xFFFF:  # noqa: PLR2004 - uint16
        raise ValueError(f"sequence number must be 0..65535, got {sequence}")
    return bytes((FILTER_SEQUENCE_NUMBER,)) + sequence.to_bytes(2, "little")


def encode_report_all_records() -> bytes:
    """`01 01`: report every stored record."""
    return _request(OpCode.REPORT_STORED_RECORDS, Operator.ALL_RECORDS)


def encode_report_records_from(sequence: int) -> bytes:
    """`01 03 01 <seq LE>`: report stored records with sequence number >= ``sequence``."""
    return _request(
        OpCode.REPORT_STORED_RECORDS, Operator.GREATER_THAN_OR_EQUAL, _sequence(sequence)
    )


def encode_report_number_of_records(from_sequence: int | None = None) -> bytes:
    """`04 01` (all) or `04 03 01 <seq LE>`: ask how many records would be reported."""
    if from_sequence is None:
        return _request(OpCode.REPORT_NUMBER_OF_RECORDS, Operator.ALL_RECORDS)
    return _request(
        OpCode.REPORT_NUMBER_OF_RECORDS, Operator.GREATER_THAN_OR_EQUAL, _sequence(from_sequence)
    )


def encode_abort() -> bytes:
    """`03 00`: abort the running procedure."""
    return _request(OpCode.ABORT_OPERATION, Operator.NULL)


def decode_racp_response(data: bytes) -> RacpNumberOfRecords | RacpResponse:
    """Decode a server indication on the RACP (§7.4)."""
    reader = Reader(data, "racp")
    op_code = reader.uint(1, "op_code")
    if op_code not in {OpCode.NUMBER_OF_RECORDS_RESPONSE, OpCode.RESPONSE_CODE}:
        raise DecodeError(
            "racp.op_code", f"expected 0x05 or 0x06 (server response), got 0x{op_code:02x}"
        )
    operator = reader.uint(1, "operator")
    if operator != Operator.NULL:
        raise DecodeError("racp.operator", f"expected 0x00 (Null), got 0x{operator:02x}")
    if op_code == OpCode.NUMBER_OF_RECORDS_RESPONSE:
        size = reader.remaining()
        if size not in _COUNT_SIZES:
            raise DecodeError("racp.count", f"expected 1, 2 or 4 bytes, got {size}")
        return RacpNumberOfRecords(count=reader.uint(size, "count"))
    request = reader.uint(1, "request_op_code")
    code = reader.uint(1, "response_code")
    reader.expect_end()
    return RacpResponse(request, code, _RESPONSE_NAMES.get(code, "reserved"))


def decode_racp_request(data: bytes) -> RacpRequest:
    """Decode a client request (what an emulated meter receives); sequence filters only."""
    reader = Reader(data, "racp_request")
    raw_op, raw_operator = reader.uint(1, "op_code"), reader.uint(1, "operator")
    if raw_op not in _REQUEST_OPCODES:
        raise DecodeError("racp_request.op_code", f"expected 0x01..0x04, got 0x{raw_op:02x}")
    if raw_operator not in Operator.__members__.values():
        raise DecodeError("racp_request.operator", f"expected 0x00..0x06, got 0x{raw_operator:02x}")
    op_code, operator = OpCode(raw_op), Operator(raw_operator)
    if operator not in {
        Operator.LESS_THAN_OR_EQUAL,
        Operator.GREATER_THAN_OR_EQUAL,
        Operator.WITHIN_RANGE,
    }:
        reader.expect_end()
        return RacpRequest(op_code, operator)
    filter_type = reader.uint(1, "filter_type")
    if filter_type != FILTER_SEQUENCE_NUMBER:
        raise DecodeError(
            "racp_request.filter_type", f"expected 0x01 (sequence), got 0x{filter_type:02x}"
        )
    first = reader.uint(2, "operand")
    second = reader.uint(2, "operand_max") if operator == Operator.WITHIN_RANGE else None
    reader.expect_end()
    if operator == Operator.LESS_THAN_OR_EQUAL:
        return RacpRequest(op_code, operator, filter_type, max_sequence=first)
    return RacpRequest(op_code, operator, filter_type, min_sequence=first, max_sequence=second)
