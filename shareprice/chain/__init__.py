"""The chain's data, decoded: typed records, SCALE/hex codecs and the epoch-document parser.

Pure: bytes and JSON in, exact-integer records out. No database, no I/O beyond what the caller
hands in, and no import of any other part of shareprice, so every rule about the chain's formats
is tested on its own and every other layer can depend on it.

May import: the standard library, orjson. Imported by: everything that reads chain data.
"""
