package main

import (
	"fmt"
	"net/http"

	"github.com/vmware/govmomi/simulator"
)

func (l *lab) ctlRestore(r *http.Request) (interface{}, error) {
	return nil, fmt.Errorf("not implemented yet")
}

func (l *lab) ctlExport(r *http.Request) (interface{}, error) {
	return nil, fmt.Errorf("not implemented yet")
}

func (l *lab) registered(vm *simulator.VirtualMachine) {}
