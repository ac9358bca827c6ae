"""The service: builds every component from the settings, starts them in order and stops them
in reverse."""
