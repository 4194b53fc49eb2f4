"""The web app's parts (Gradio): request limits and the result store (``serving``).
``app.py`` at the repository root lays out the page. Importing ``afiqa`` never imports this."""
