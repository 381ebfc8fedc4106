import snapgraph


def test_public_surface_is_pinned() -> None:
    assert sorted(snapgraph.__all__) == ["Settings", "__version__", "create_app"]
    for name in snapgraph.__all__:
        assert hasattr(snapgraph, name)
