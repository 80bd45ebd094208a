"""Local media files: confinement to the media root, type sniffing, ``data:`` URLs
(``files``) and the metadata an estimate needs — pages, seconds, pixels (``meta``). May import
``core`` only."""
