"""The network: its config (``config``), backbones (``backbones``, ``efficientnet_lite``),
attention (``attention``), layers (``layers``), losses (``losses``) and the builder
(``network``). Importing this package loads no Keras; each module does what it needs."""
