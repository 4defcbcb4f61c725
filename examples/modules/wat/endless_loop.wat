;; endless_loop.wat: misbehaves on purpose. A reporter whose handlers never
;; return: the host stops each call at the module's call_timeout.
(module
  (memory (export "memory") 1)

  (func (export "coordinatord_abi_v1"))

  ;; coordinatord_alloc: a fixed buffer at 1024 (0 if the event does not fit).
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))

  (func $spin (loop $forever (br $forever)))

  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (call $spin)
    (i32.const 0))

  (func (export "coordinatord_on_lease_event") (param i32 i32) (result i32)
    (call $spin)
    (i32.const 0))
)
