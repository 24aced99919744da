"""The load generator on PostgreSQL and several nodes (issue 17): how users are dealt
to nodes, PostgreSQL's figures between two samples, the flags, and one small two-node
``steady`` run on a fresh database (nothing lost; commits, NOTIFYs and cross-node pairs
counted). No timing is asserted (the machine is shared)."""

from __future__ import annotations

import collections

import pytest

from bench.cluster import PgWatch, node_of, with_database
from bench.load import Params, build_parser, run, split
from tests.support.pg import PG_DSN, require_postgres


def test_every_worker_holds_users_of_every_node() -> None:
    users = list(range(40))
    for workers in (1, 2, 3):
        for share in split(users, workers):
            nodes = collections.Counter(node_of(i, workers, 2) for i in share)
            assert set(nodes) == {0, 1}
            assert abs(nodes[0] - nodes[1]) <= 1


def test_pg_figures_are_differences_over_the_window() -> None:
    first = {
        "at": 10.0,
        "backends": {1: 5.0, 2: 1.0},
        "shared": 2.0,
        "commits": 100,
        "notifies": {"m": 10},
        "notifications": 10,
    }
    last = {
        "at": 12.0,
        "backends": {1: 6.0, 3: 0.5},
        "shared": 2.5,
        "commits": 300,
        "notifies": {"m": 50, "d": 20},
        "notifications": 15,  # the events of the window, packed
    }
    figures = PgWatch.between(first, last)
    assert figures["backend_cpu_s"] == 1.5  # pid 1 used 1 s, pid 3 (new) 0.5 s
    assert figures["shared_cpu_s"] == 0.5
    assert figures["commits_per_s"] == 100.0
    assert figures["notifies"] == 5
    assert figures["notified_events"] == 60
    assert figures["notifies_by_kind"] == {"d": 20, "m": 40}


def test_flags_and_their_checks() -> None:
    args = build_parser().parse_args(
        ["steady", "--db", "postgresql://x/y", "--fresh-db", "--nodes", "2", "--reuse-port"]
    )
    assert (args.db, args.fresh_db, args.nodes, args.reuse_port) == (
        "postgresql://x/y",
        True,
        2,
        True,
    )
    assert with_database("postgresql://u@h:5432/test?sslmode=off", "b1") == (
        "postgresql://u@h:5432/b1?sslmode=off"
    )
    with pytest.raises(ValueError, match="need --db"):
        run(["steady"], Params(), nodes=2, quiet=True)


@pytest.mark.pg
@pytest.mark.timeout(180)
def test_two_nodes_on_a_fresh_database_lose_nothing() -> None:
    require_postgres()
    params = Params(users=40, rate=50.0, duration=3.0, drain=20.0, workers=2)
    [result] = run(["steady"], params, quiet=True, db=PG_DSN, fresh_db=True, nodes=2)
    assert result["sent"] >= 100
    assert result["acked"] == result["delivered"] == result["receipts"] == result["sent"]
    assert result["lost"] == 0
    assert result["duplicates"] == 0
    assert 0 < result["cross_node_pairs_pct"] < 100
    assert len(result["nodes_cpu_pct"]) == 2
    assert result["postgres"]["commits"] > 0
    assert result["postgres"]["notifies_by_kind"]["m"] > 0
