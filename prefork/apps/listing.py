"""A folder's listing as an HTML page (--listing), like nginx's autoindex.

Folders first, then files, each group sorted by name; names are HTML-escaped where they
are shown and percent-encoded where they are linked, so that a file named
`<script>` or `a&b "c".txt` is shown as text and links to itself.
"""

from __future__ import annotations

import html
import os
import stat
import time
from typing import List, Tuple
from urllib.parse import quote

from prefork.apps.response import Response


def render_listing(dir_fd: int, rel: str, show_dotfiles: bool) -> Response:
    """The listing of the open folder `dir_fd`, whose decoded path is `rel` (ends in /)."""
    rows: List[Tuple[bool, str, int, float]] = []
    with os.scandir(dir_fd) as it:  # scandir works on a duplicate of dir_fd
        for item in it:
            name = item.name
            if name[:1] == "." and not show_dotfiles and name != ".well-known":
                continue
            try:
                st = item.stat()  # follows symlinks: the listing shows what a click gets
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if is_dir or stat.S_ISREG(st.st_mode):
                rows.append((not is_dir, name, st.st_size, st.st_mtime))
    rows.sort()
    title = html.escape(_shown(rel))
    out = [
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n",
        f"<title>Index of {title}</title>\n</head>\n<body>\n<h1>Index of {title}</h1>\n",
        "<table>\n<tr><th>Name</th><th>Size</th><th>Last modified (UTC)</th></tr>\n",
    ]
    if rel != "/":
        out.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>\n')
    for is_file, name, size, mtime in rows:
        slash = "" if is_file else "/"
        href = html.escape(quote(os.fsencode(name), safe="") + slash)
        shown = html.escape(_shown(name) + slash)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(mtime))
        out.append(f'<tr><td><a href="{href}">{shown}</a></td><td>{size if is_file else "-"}</td>'
                   f"<td>{when}</td></tr>\n")
    out.append("</table>\n</body>\n</html>\n")
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-cache"),
               ("X-Content-Type-Options", "nosniff")]
    return Response(200, headers, "".join(out).encode("utf-8"))


def _shown(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(name).decode("utf-8", "replace")
