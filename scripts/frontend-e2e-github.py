#!/usr/bin/env python3
"""A stand-in for the parts of GitHub's REST API that nexusd's GitHub skills read, serving one
git checkout on disk under every repository name asked for — so the frontend's scan, analysis,
complexity and compliance views get a real tree, real files and real commits without reaching
github.com (this machine cannot). Used by scripts/frontend-e2e.

    frontend-e2e-github.py PORT GIT_DIR

Routes (as src/github.rs calls them):
    GET /repos/{owner}/{repo}                              {"default_branch": "main"}
    GET /repos/{owner}/{repo}/git/trees/main?recursive=1   the tracked files and their directories
    GET /repos/{owner}/{repo}/contents/{path}?ref=main     the raw file
    GET /repos/{owner}/{repo}/commits?since=…&page=N       the newest commits
    GET /repos/{owner}/{repo}/commits/{sha}                one commit with its files
"""

import json
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

PORT = int(sys.argv[1])
ROOT = Path(sys.argv[2]).resolve()


def git(*args):
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout


FILES = [line for line in git("ls-files").splitlines() if (ROOT / line).is_file()]


def tree():
    dirs = set()
    entries = []
    for path in FILES:
        parts = path.split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]))
        entries.append({"path": path, "type": "blob", "size": (ROOT / path).stat().st_size})
    entries += [{"path": d, "type": "tree"} for d in sorted(dirs)]
    return {"tree": entries, "truncated": False}


def commit_json(sha, with_files):
    fmt = "%H%x00%aI%x00%cI%x00%B"
    sha, author, committer, message = git("show", "-s", f"--format={fmt}", sha).split("\x00", 3)
    body = {
        "sha": sha,
        "commit": {"author": {"date": author}, "committer": {"date": committer}, "message": message.strip()},
    }
    if with_files:
        names = git("show", "--format=", "--name-only", sha).split()
        body["files"] = [{"filename": n} for n in names]
    return body


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if len(parts) < 3 or parts[0] != "repos":
            return self.send(404, {"message": "Not Found"})
        rest = parts[3:]
        try:
            if not rest:
                return self.send(200, {"default_branch": "main", "full_name": f"{parts[1]}/{parts[2]}"})
            if rest[:2] == ["git", "trees"]:
                return self.send(200, tree())
            if rest[0] == "contents":
                path = "/".join(rest[1:])
                if path not in FILES:
                    return self.send(404, {"message": "Not Found"})
                return self.send(200, (ROOT / path).read_bytes(), "application/vnd.github.raw")
            if rest == ["commits"]:
                page = int(query.get("page", ["1"])[0])
                per_page = int(query.get("per_page", ["30"])[0])
                shas = git("log", f"--max-count={per_page}", f"--skip={(page - 1) * per_page}", "--format=%H").split()
                return self.send(200, [commit_json(s, False) for s in shas])
            if len(rest) == 2 and rest[0] == "commits":
                return self.send(200, commit_json(rest[1], True))
        except (subprocess.CalledProcessError, ValueError):
            return self.send(404, {"message": "Not Found"})
        return self.send(404, {"message": "Not Found"})


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
