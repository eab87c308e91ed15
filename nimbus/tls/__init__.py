"""TLS for Nimbus: PEM files checked before use, and a local certificate authority."""
