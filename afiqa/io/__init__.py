"""Photos in and results out: the decoding policy (``inputs``), listing files and URIs
(``listing``), the CSV writer (``csvout``) and pictures of the results (``render``)."""
