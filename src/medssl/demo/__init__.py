"""The demo: brain regions on Colin27 + AAL (see __main__)."""
