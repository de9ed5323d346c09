"""Witnesses in a test: a witness of its own for one log, or the scheme's witnesses served on
the sockets the scheme named, and a log's checkpoints to submit to them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from broker.scheme import dev as devscheme
from broker.witness.app import create_witness_app
from broker.witness.settings import load_witness_settings
from tests.support.servers import serve_on
from trust.checkpoint import Checkpoint, NoteSigner, generate_signer, sign_checkpoint
from trust.cosignature import generate_cosigner
from trust.merkle import MerkleTree, leaf_hash
from trust.witnessing import AddCheckpoint


class TestLog:
    """A log of numbered leaves (``salt`` forks it), signed with one key."""

    __test__ = False

    def __init__(self, signer: NoteSigner, salt: bytes = b"") -> None:
        self.signer = signer
        self.salt = salt
        self.tree = MerkleTree()

    def grow(self, size: int) -> str:
        """Grow to ``size`` leaves; the signed checkpoint of that size."""
        while self.tree.size < size:
            self.tree.append(leaf_hash(self.salt + self.tree.size.to_bytes(8, "big")))
        return sign_checkpoint(
            Checkpoint(self.signer.name, size, self.tree.root(size)), self.signer
        )

    def request(self, old: int, size: int) -> AddCheckpoint:
        note = self.grow(size)
        proof = [] if old in (0, size) else self.tree.consistency_proof(old, size)
        return AddCheckpoint(old, tuple(proof), note)


@dataclass
class StandaloneWitness:
    config: Path
    vkey: str
    log: TestLog
    url: str = ""
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        settings = load_witness_settings(self.config)
        self.runner = await serve_on(create_witness_app(settings), devscheme.bind_loopback())
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def post(
        self, session: aiohttp.ClientSession, request: AddCheckpoint | bytes
    ) -> tuple[int, str, str]:
        body = request if isinstance(request, bytes) else request.body()
        async with session.post(f"{self.url}/add-checkpoint", data=body) as response:
            return response.status, response.content_type, await response.text()


def standalone_witness(
    root: Path, *, log: NoteSigner | None = None, name: str = "witness.test/w1"
) -> StandaloneWitness:
    """A witness config in ``root`` named ``name`` that trusts the key of ``log`` (by default
    a fresh one for origin example.test/log)."""
    log = log or NoteSigner(generate_signer("example.test/log")[0])
    log_vkey = log.vkey
    skey, vkey = generate_cosigner(name)
    root.mkdir(parents=True, exist_ok=True)
    (root / "witness.skey").write_text(skey + "\n")
    (root / "log.vkey").write_text(log_vkey + "\n")
    config = root / "witness.toml"
    config.write_text(
        'key_file = "witness.skey"\nstate = "state/witness.sqlite3"\n'
        '[[logs]]\nvkey_file = "log.vkey"\n'
    )
    return StandaloneWitness(config, vkey, TestLog(log))


async def serve_scheme_witnesses(
    scheme: devscheme.DevScheme, listeners: devscheme.Listeners
) -> dict[str, web.AppRunner]:
    """The scheme's witnesses, each on the socket held for it."""
    return {
        wid: await serve_on(
            create_witness_app(load_witness_settings(scheme.witness_config(wid))), sock
        )
        for wid, sock in listeners.witnesses.items()
    }
