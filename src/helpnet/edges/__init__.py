"""Edge maps for the HELPNet edge prior: PiDiNet (pretrained), a Sobel stand-in, and a QC figure.

Modules: ``pidinet`` (network and checkpoint loading), ``extract`` (slice rendering, extraction,
checks, edge-map I/O), ``classical`` (Sobel), ``qc`` (overview PNG), ``cli`` (subcommands).
"""
