// npm run rootfs [-- --source alpine|busybox] [--from-tar FILE | --from-oci PATH] [--name NAME] [--force]
//
// Prepares the image containers use as their root filesystem, or imports
// one. See rootfs/README.md for the sources, the layers and where images live.

import { parseArgs } from 'node:util'
import { requireRoot } from '../shared/cli.ts'
import { exitWithError, UsageError } from '../shared/errors.ts'
import { prepareImage } from '../shared/rootfs.ts'
import { rootStateDir } from '../shared/settings.ts'

const usage = `Usage: npm run rootfs -- [options]

Prepare the image that containers use as their root filesystem, in
${rootStateDir}/images (set CFS_HOME to move it): root's store, for steps
02-08 and for 09-10 run with sudo; it runs under sudo. Steps 09-10 run
without sudo prepare busybox in a store of your own.

Options:
  --source alpine|busybox  where to get it (default: Alpine if the network
                           allows, else the host's busybox-static)
  --from-tar FILE          use any root filesystem tarball (e.g. docker export),
                           as a one-layer image
  --from-oci PATH          import an image with its layers: an OCI image layout
                           (a directory, or a tar of one: docker save), or a
                           docker-archive (podman save, older docker save)
  --name NAME              the image's name (default: the archive's, or the file's)
  --force                  rebuild, or replace the image of that name

Then: npm run images (lists images and their layers)
`

try {
  const { values } = parseArgs({
    options: {
      source: { type: 'string' },
      'from-tar': { type: 'string' },
      'from-oci': { type: 'string' },
      name: { type: 'string' },
      force: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) {
    process.stdout.write(usage)
    process.exit(0)
  }
  if (values.source && values.source !== 'alpine' && values.source !== 'busybox') {
    throw new UsageError(`--source must be alpine or busybox, not \`${values.source}\``)
  }
  if (values['from-tar'] && values['from-oci']) throw new UsageError('--from-tar and --from-oci: one image at a time')
  if (values.name && !values['from-tar'] && !values['from-oci']) throw new UsageError('--name goes with --from-tar or --from-oci (the built-in images are named alpine and busybox)')
  requireRoot() // images keep device nodes and owners: root writes them (re-runs under sudo)
  const rootfs = await prepareImage({
    source: values.source as 'alpine' | 'busybox' | undefined,
    fromTar: values['from-tar'],
    fromOci: values['from-oci'],
    name: values.name,
    force: values.force,
  })
  console.log(rootfs)
} catch (err) {
  exitWithError(err)
}

