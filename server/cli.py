"""Server sub-commands of ``gramcast`` (registered by gramcast.cli as a plug-in module)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "token", help="mint a signed room token",
        description="Print a token that lets NAME join ROOM. The server must run with the same "
                    "GRAMCAST_SECRET (or --secret).",
    )
    p.add_argument("room")
    p.add_argument("name")
    p.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds (default: 3600)")
    p.add_argument("--secret", help="shared secret (default: $GRAMCAST_SECRET)")
    p.set_defaults(func=run_token)


def run_token(args) -> int:
    from gramcast.server.tokens import load_secret, mint_token

    print(mint_token(load_secret(args.secret), args.room, args.name, ttl_s=args.ttl))
    return 0
