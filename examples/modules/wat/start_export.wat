;; start_export.wat: misbehaves on purpose. A reporter built as a WASI
;; command: it exports _start. Refused at upload (a module is a reactor).
(module
  (memory (export "memory") 1)

  (func (export "_start"))
  (func (export "coordinatord_abi_v1"))

  ;; coordinatord_alloc: a fixed buffer at 1024 (0 if the event does not fit).
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))

  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (i32.const 0))
)
