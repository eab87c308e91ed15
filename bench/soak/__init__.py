"""The chaos soak: three sites under load while services are killed, frozen and cut off at
random, then an audit of every promise against the harness's own record of what was
acknowledged. `python -m bench.soak --duration 600` (`make soak`, `make soak-short`)."""
