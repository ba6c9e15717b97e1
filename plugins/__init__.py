"""Built-in bench plugins (installed as ``bench_plugins``); each module registers through the
``bench.plugins`` entry-point group exactly as a third-party plugin would."""
