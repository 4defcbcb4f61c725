;; A reporter that dies like a Go guest panicking: it writes
;; "panic: boom\n\ngoroutine 1 [running]:\n" to stderr, then calls WASI
;; proc_exit(3) in its handler.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; [100, 136): the panic text, 36 bytes.
  (data (i32.const 100) "panic: boom\n\ngoroutine 1 [running]:\n")
  (func (export "coordinatord_abi_v1"))
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))
  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (i32.store (i32.const 16) (i32.const 100))
    (i32.store (i32.const 20) (i32.const 36))
    (drop (call $fd_write (i32.const 2) (i32.const 16) (i32.const 1) (i32.const 24)))
    (call $proc_exit (i32.const 3))
    (i32.const 0))
)
