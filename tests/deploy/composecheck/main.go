// composecheck validates a Docker Compose file offline with compose-go, the loader that
// `docker compose` itself uses: compose-spec JSON schema, interpolation, normalization and
// consistency (unknown services in depends_on, undefined volumes/networks/configs...).
// It also checks what the loader does not: build contexts, Dockerfiles and bind-mount sources
// must exist. On success it prints the normalized project as JSON (for further assertions).
//
//	go run . ../../../deploy/docker-compose.yml
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: composecheck COMPOSE_FILE")
		os.Exit(2)
	}
	project, err := load(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose: invalid:", err)
		os.Exit(1)
	}
	if problems := missingPaths(project); len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "compose: missing:", p)
		}
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose: cannot marshal:", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}

func load(file string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions(
		[]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithName("greenchannel"),
		cli.WithProfiles([]string{"*"}),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
		cli.WithDiscardEnvFile,
	)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

func missingPaths(project *types.Project) []string {
	var problems []string
	check := func(what, path string) {
		if _, err := os.Stat(path); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %s", what, path))
		}
	}
	for name, svc := range project.Services {
		if svc.Build != nil {
			check(name+" build context", svc.Build.Context)
			dockerfile := svc.Build.Dockerfile
			if !filepath.IsAbs(dockerfile) {
				dockerfile = filepath.Join(svc.Build.Context, dockerfile)
			}
			check(name+" dockerfile", dockerfile)
		}
		for _, v := range svc.Volumes {
			if v.Type == types.VolumeTypeBind {
				check(name+" bind mount", v.Source)
			}
		}
	}
	for name, c := range project.Configs {
		if c.File != "" {
			check("config "+name, c.File)
		}
	}
	return problems
}
