;; A reporter that writes to stdout and stderr through WASI fd_write: a
;; complete stdout line, a complete stderr line, then an unterminated stdout
;; line; it outputs {}.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "coordinatord" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)
  ;; [100, 125): "hello from stdout\npartial" (18 + 7)
  (data (i32.const 100) "hello from stdout\npartial")
  ;; [200, 215): "oops on stderr\n"
  (data (i32.const 200) "oops on stderr\n")
  (data (i32.const 300) "{}")
  (func (export "coordinatord_abi_v1"))
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))
  ;; $write(fd, ptr, len) with one iovec at 16 and nwritten at 24.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))))
  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (call $write (i32.const 1) (i32.const 100) (i32.const 18))
    (call $write (i32.const 2) (i32.const 200) (i32.const 15))
    (call $write (i32.const 1) (i32.const 118) (i32.const 7))
    (call $output (i32.const 300) (i32.const 2))
    (i32.const 0))
)
