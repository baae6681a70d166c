"""Sample tools the model can call (see :mod:`daehwa.chat.tools` for the registration API)."""
