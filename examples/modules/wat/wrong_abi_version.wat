;; wrong_abi_version.wat: misbehaves on purpose. A reporter that declares
;; ABI version 2 (export coordinatord_abi_v2): a v1 host refuses it at upload.
(module
  (import "coordinatord" "output" (func $output (param i32 i32)))

  (memory (export "memory") 1)
  (data (i32.const 16) "{\"records\":[]}")

  (func (export "coordinatord_abi_v2"))

  ;; coordinatord_alloc: a fixed buffer at 1024 (0 if the event does not fit).
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))

  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (call $output (i32.const 16) (i32.const 14))
    (i32.const 0))
)
